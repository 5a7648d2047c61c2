"""Prior-art search CLI.

  python -m designclip_jax.search index --checkpoint RUN --data DATA [DATA2 ...] --out IDX
  python -m designclip_jax.search index --checkpoint RUN --folder DRAWINGS --deeppatent DEEPPATENT_ROOT --out IDX
  python -m designclip_jax.search query --index IDX --image F.tif [F2.png ...] --text "words" --top 20 \\
      --class D7 --report out.html --json out.json
  python -m designclip_jax.search query --index IDX --patent D0907292 --locarno 28 --json record.json
  python -m designclip_jax.search query --index IDX --queries Q.jsonl --json-lines records.jsonl
  python -m designclip_jax.search serve --index IDX --port 8000

--before, --locarno and --class take lists: repeat the flag, or separate values by commas, or both
(--locarno 28,06-01 --locarno 21). Every JSON result is a search record (search.record).
"""

from __future__ import annotations

import argparse
import json
import sys

from etils import epath

from designclip_jax.data.layout import SPLITS
from designclip_jax.paths import absolute
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

  p = sub.add_parser('query', help='rank patents by drawings, words or a patent of the index')
  common(p)
  p.add_argument('--image', nargs='+', default=[], help='query drawings (TIFF/PNG/JPEG); views of one design combine')
  p.add_argument('--text', help='query words')
  p.add_argument('--patent', help="a patent of the index: its drawings are the query, its family is left out and "
                 "the cut-off is its effective filing date unless --before says otherwise")
  p.add_argument('--queries', help='a JSON Lines file of queries (search.queries), run on one model load')
  p.add_argument('--top', type=int, default=20, help='number of patents (default of --queries lines too)')
  p.add_argument('--class', dest='class_code', action='append',
                 help='only these USPC design classes, as the JSON writes them (e.g. D7)')
  p.add_argument('--locarno', action='append', help='only these Locarno classes (28) or class-subclasses (28-03)')
  p.add_argument('--before', action='append',
                 help='only patents effectively filed strictly before this date (YYYY-MM-DD); several dates: one '
                 'search as of each')
  p.add_argument('--target', default='drawings', choices=('drawings', 'captions', 'all'),
                 help="what to match against: the patents' drawings (default), their captions, or both")
  p.add_argument('--report', help='write a self-contained HTML report here')
  p.add_argument('--json', help='write the search record here (a list of records when there are several '
                 'cut-offs)')
  p.add_argument('--json-lines', help='write every search record here, one per line')

  p = sub.add_parser('serve', help='a local search web page (needs the [search] extra)')
  common(p)
  p.add_argument('--host', default='127.0.0.1', help='127.0.0.1 (default) serves this machine only')
  p.add_argument('--port', type=int, default=8000)
  p.add_argument('--max-top', type=int, default=Limits.max_top, help='the most patents one query may ask for')
  p.add_argument('--max-uploads', type=int, default=Limits.max_uploads, help='the most drawings one query may send')
  p.add_argument('--max-upload-mb', type=float, default=Limits.max_upload_bytes / 2**20, help='the largest drawing file')
  p.add_argument('--api-docs', action='store_true', help='also serve the API description (/docs, /openapi.json)')
  return parser


def _queries(args) -> list:
  """The command's queries, every input checked before the model loads."""
  from designclip_jax.search import filters, queries  # pylint: disable=import-outside-toplevel
  from designclip_jax.search.index import SearchError  # pylint: disable=import-outside-toplevel
  if args.queries:
    given = [f'--{n}' for n, v in (('image', args.image), ('text', args.text), ('patent', args.patent),
                                   ('class', args.class_code), ('locarno', args.locarno), ('before', args.before))
             if v]
    if given:
      raise SearchError(f'--queries takes each query\'s drawings, words and filters from its lines; drop '
                        f'{", ".join(given)}')
    if args.json:
      raise SearchError('--queries writes its records with --json-lines')
    return queries.read_queries(args.queries, top=args.top, target=args.target)
  chosen = filters.parse(args.before, args.locarno, args.class_code, args.target)
  images = tuple(queries.Image(p, path=p) for p in args.image)
  for image in images:
    image.read()  # a missing file fails before the model loads
  return [queries.Query(chosen, args.top, args.patent, images, args.text).check()]


def _print(result) -> None:
  query, rec = result.query, result.record
  asked = ([f'patent {query.patent}'] if query.patent else []) + \
      [f'{len(query.images)} drawing(s)' if query.images else '', f'words "{query.text}"' if query.text else '']
  print(f'{"query " + query.label + ": " if query.label else ""}{", ".join(a for a in asked if a)}'
        f'{", before " + result.before if result.before else ""}: {rec["patents_searched"]:,} patents searched')
  print(f'{"rank":>4}  {"score":>6}  {"patent":<12} {"class":<5} {"locarno":<7} {"filed":<10} {"view":<12} title')
  for rank, h in enumerate(result.hits, 1):
    view = '(caption)' if h.kind == 'caption' else h.view
    print(f'{rank:>4}  {h.score:6.3f}  {h.patent_id:<12} {h.class_:<5} {h.locarno:<7} {h.effective_filing_date:<10} '
          f'{view:<12} {h.title or h.drawing}')


def _query(args) -> None:
  from designclip_jax.search import report  # pylint: disable=import-outside-toplevel
  from designclip_jax.search.query import Searcher  # pylint: disable=import-outside-toplevel
  queries = _queries(args)
  searcher = Searcher(args.index, args.checkpoint, load_model=any(not q.patent for q in queries))
  results = searcher.run(queries, query_sheets=bool(args.report))
  for result in results:
    _print(result)
  records = [r.record for r in results]
  if args.json:
    with epath.Path(args.json).open('w') as f:
      json.dump(records[0] if len(records) == 1 else records, f, indent=1)
  if args.json_lines:
    with epath.Path(args.json_lines).open('w') as f:
      f.writelines(json.dumps(r) + '\n' for r in records)
  if args.report:  # the drawings of the shown hits only, embedded
    catalog = searcher.catalog
    shown = [report.Shown(r, [report.data_uri(catalog.drawing(h.row)) for h in r.hits],
                          [[report.data_uri(catalog.drawing(v)) for v in catalog.other_views(h)] for h in r.hits])
             for r in results]
    page = report.render(title='DesignCLIP prior-art search', shown=shown, footer=f'index {absolute(args.index)}')
    epath.Path(args.report).write_text(page)


def main(argv=None) -> None:
  args = _parser().parse_args(argv)
  from designclip_jax.search import index, patents, query, server  # pylint: disable=import-outside-toplevel
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
      for d in manifest.datasets:
        missing = [f for f in patents.FIELDS if f not in d.get('patent_fields', ())]
        if missing:  # said in index.json too
          why = d.get('patent_fields_note') or 'indexed before they were stored'
          print(f'note: {d["data_dir"]} gives no {", ".join(missing)} ({why}): filters on them leave its patents out')
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
