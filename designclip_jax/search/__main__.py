"""Prior-art search CLI.

  python -m designclip_jax.search index --checkpoint RUN --data DATA [DATA2 ...] --out IDX
  python -m designclip_jax.search index --checkpoint RUN --folder DRAWINGS --deeppatent DEEPPATENT_ROOT --out IDX
  python -m designclip_jax.search query --index IDX --image F.tif [F2.png ...] --text "words" --top 20 \\
      --class D7 --report out.html --json out.json
  python -m designclip_jax.search serve --index IDX --port 8000
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from designclip_jax.data.layout import SPLITS
from designclip_jax.search.server import Limits


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m designclip_jax.search', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='command', required=True)
  p = sub.add_parser('index', help='embed the drawings (and captions) of data sets, folders of drawings or '
                     'DeepPatent trees (resumes, appends)')
  p.add_argument('--checkpoint', required=True, help='training workdir, HF CLIP directory or OpenAI checkpoint')
  p.add_argument('--data', nargs='+', default=[], help='ingested data set directories')
  p.add_argument('--folder', nargs='+', default=[],
                 help="folders of drawings (TIFF/PNG/JPEG, searched recursively); a drawing's patent is its folder's "
                 'name, or its file name for files at the top')
  p.add_argument('--deeppatent', nargs='+', default=[],
                 help='DeepPatent roots (list files in ROOT or ROOT/data, image paths relative to ROOT)')
  p.add_argument('--out', required=True, help='index directory (created, resumed, or appended to)')
  p.add_argument('--split', nargs='+', choices=SPLITS, help='splits of --data to index (default: every split present)')
  p.add_argument('--deeppatent-split', nargs='+',
                 help='DeepPatent splits to index, query and DB lists both (default: every split present)')
  p.add_argument('--sheet-size', type=int,
                 help="the square size --folder and --deeppatent drawings are preprocessed to, as ingestion's "
                 '--image-size (default: the model\'s input size; a new index only)')
  p.add_argument('--dtype', default='float16', choices=('float16', 'float32'), help='stored embedding dtype')
  p.add_argument('--batch-size', type=int, default=128)
  p.add_argument('--records-per-shard', type=int, default=256,
                 help='patents per shard, the unit of resume (for --folder and --deeppatent, about as many drawings: '
                 'search.sources.FILES_PER_RECORD per record); a new index only: an existing one keeps its own')

  def common(p):
    p.add_argument('--index', required=True)
    p.add_argument('--checkpoint', help='the model that built the index (default: the path index.json names)')

  p = sub.add_parser('query', help='rank patents by drawings and/or words')
  common(p)
  p.add_argument('--image', nargs='+', default=[], help='query drawings (TIFF/PNG/JPEG); views of one design combine')
  p.add_argument('--text', help='query words')
  p.add_argument('--top', type=int, default=20, help='number of patents')
  p.add_argument('--class', dest='class_code', help='only this design class, as the JSON writes it (e.g. D7)')
  p.add_argument('--target', default='drawings', choices=('drawings', 'captions', 'all'),
                 help="what to match against: the patents' drawings (default), their captions, or both")
  p.add_argument('--report', help='write a self-contained HTML report here')
  p.add_argument('--json', help='write {"hits": [...]} here, best first')

  p = sub.add_parser('serve', help='a local search web page (needs the [search] extra)')
  common(p)
  p.add_argument('--host', default='127.0.0.1', help='127.0.0.1 (default) serves this machine only')
  p.add_argument('--port', type=int, default=8000)
  p.add_argument('--max-top', type=int, default=Limits.max_top, help='the most patents one query may ask for')
  p.add_argument('--max-uploads', type=int, default=Limits.max_uploads, help='the most drawings one query may send')
  p.add_argument('--max-upload-mb', type=float, default=Limits.max_upload_bytes / 2**20, help='the largest drawing file')
  p.add_argument('--api-docs', action='store_true', help='also serve the API description (/docs, /openapi.json)')
  return parser


def _read(path: str) -> tuple[str, bytes]:
  from designclip_jax.search.index import SearchError  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    raise SearchError(f'query image {path} does not exist')
  with open(path, 'rb') as f:
    return path, f.read()


def _query(args) -> None:
  from designclip_jax.search import report  # pylint: disable=import-outside-toplevel
  from designclip_jax.search.index import SearchError  # pylint: disable=import-outside-toplevel
  from designclip_jax.search.query import Searcher, check_top, parse_class  # pylint: disable=import-outside-toplevel
  if not args.image and not args.text:
    raise SearchError('give query drawings (--image) and/or words (--text)')
  check_top(args.top)  # bad options fail before the model loads
  parse_class(args.class_code)
  images = [_read(p) for p in args.image]
  searcher = Searcher(args.index, args.checkpoint)
  sheets, hits = searcher.search(images, args.text, top=args.top, class_code=args.class_code, target=args.target)
  print(f'{"rank":>4}  {"score":>6}  {"patent":<12} {"class":<5} {"view":<12} title or drawing')
  for rank, h in enumerate(hits, 1):
    view = '(caption)' if h.kind == 'caption' else h.view
    print(f'{rank:>4}  {h.score:6.3f}  {h.patent_id:<12} {h.class_:<5} {view:<12} {h.title or h.drawing}')
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'query': {'images': args.image, 'text': args.text, 'class': args.class_code, 'top': args.top,
                           'target': args.target}, 'hits': [h.to_json() for h in hits]}, f, indent=1)
  if args.report:
    page = report.render(title='DesignCLIP prior-art search', hits=hits,
                         thumbnails=[searcher.thumbnail(h) for h in hits], query_sheets=sheets,
                         text=args.text or '', class_code=args.class_code or '', top=args.top, target=args.target,
                         footer=f'index {os.path.abspath(args.index)}')
    with open(args.report, 'w') as f:
      f.write(page)


def main(argv=None) -> None:
  args = _parser().parse_args(argv)
  from designclip_jax.search import index, query, server  # pylint: disable=import-outside-toplevel
  try:
    if args.command == 'index':
      manifest = index.build(args.checkpoint, args.out, data_dirs=args.data, folders=args.folder,
                             deeppatent_roots=args.deeppatent, splits=args.split,
                             deeppatent_splits=args.deeppatent_split, sheet_size=args.sheet_size, dtype=args.dtype,
                             records_per_shard=args.records_per_shard, batch_size=args.batch_size)
      skipped = sum(s.get('skipped', 0) for s in manifest.shards)
      print(f'index {args.out}: {sum(s["rows"] for s in manifest.shards):,} embeddings ({manifest.dtype}) of '
            f'{len(manifest.datasets)} source(s), model {index.describe_model(manifest.model)}'
            + (f'; {skipped:,} unreadable drawing(s) left out' if skipped else ''))
    elif args.command == 'query':
      _query(args)
    else:
      limits = server.Limits(max_top=args.max_top, max_uploads=args.max_uploads,
                             max_upload_bytes=int(args.max_upload_mb * 2**20))
      server.check_port_free(args.host, args.port)  # before minutes of loading
      server.serve(query.Searcher(args.index, args.checkpoint), args.host, args.port, limits=limits,
                   api_docs=args.api_docs)
  except (ValueError, FileNotFoundError) as e:  # SearchError and the loader's ModelSourceError are ValueErrors
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  main()
