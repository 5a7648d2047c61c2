"""IMPACT CSVs with their drawing sheets, or USPTO Red Book design grants -> a TFDS ArrayRecord data set.

    python -m designclip_jax.data.ingest --csv 'impact/*.csv' --images impact/ --out DATA_DIR
    python -m designclip_jax.data.ingest --redbook I20210105.tar grants/ --csv 'impact/*.csv' --out DATA_DIR
    # the CSV path on Apache Beam (pip install '.[beam]'):
    python -m designclip_jax.data.ingest ... --beam-runner DirectRunner --beam-options='--direct_num_workers=4'

One record per patent: its images (front-page drawing first, then the sheets, each cropped to the
drawing, padded square, resized and PNG-encoded), the view label of each image, title, caption,
class index, family id and Locarno code. ``--redbook`` reads weekly tars (``I<date>.tar`` holding
``.../DESIGN/USD<number>-<date>.ZIP``), folders of those ZIPs, or per-patent folders with the XML beside
the sheets, found by name at any depth; utility, plant and reissue grants are counted and skipped; the
caption is IMPACT's where ``--csv`` has the patent, else built from the grant's claim and views; it
also writes ``patents.jsonl`` (dates, USPC, Locarno, family, priority, examiner and applicant citations).

Splits: ``--split-file train=PATH`` (and validation=, test=; one patent id per line) when given; else
by family where grant XML gives families, so a family never straddles splits; else (a CSV alone) by a
hash of the patent id. The report counts what still leaks across splits (families, identical
drawings). Bad rows are skipped or repaired by a stated rule, never silently: every one is listed with
its source, row and reason in ``ingest_report.csv`` and counted in ``ingest_report.json``.

Streaming and resumable: a killed run started again skips the blocks it finished, and the output does
not depend on the worker count. When all blocks are done the shards are renamed to TFDS's names and
described with TFDS metadata, and ``record_index-<split>.npz`` (patent id, class, views, family,
Locarno per record, in record order) is written for readers that must not touch the images. A finished
output is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys

from designclip_jax.data.ingest.report import print_summary
from designclip_jax.data.ingest.errors import IngestError
from designclip_jax.data.ingest.stream import ingest, ingest_redbook
from designclip_jax.data.ingest.writer import ROWS_PER_SHARD


def _split_files(values: list[str]) -> dict[str, str]:
  files = {}
  for value in values:
    split, sep, path = value.partition('=')
    if not sep or not path:
      raise IngestError(f'--split-file {value!r}: expected SPLIT=PATH, e.g. test=test_ids.txt')
    files[split] = path
  return files


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--csv', help='IMPACT CSV file or glob (quote it); with --redbook, the captions to use')
  parser.add_argument('--images',
                      help='directory or zip holding the TIFF/PNG files (a directory may hold <csv stem>.zip per CSV)')
  parser.add_argument('--redbook', nargs='+', metavar='PATH',
                      help='Red Book weekly tars, folders of USD<number>-<date>.ZIP, or per-patent folders')
  parser.add_argument('--out', required=True, help='data set directory to write')
  parser.add_argument('--split-file', action='append', default=[], metavar='SPLIT=PATH',
                      help='a published split list (one patent id per line); repeat for each split')
  parser.add_argument('--image-size', type=int, default=256, help='stored square size in pixels')
  parser.add_argument('--workers', type=int, default=None, help='decoding processes (default: up to 4)')
  parser.add_argument('--tokenizer-vocab', type=int, default=0,
                      help='also train a BPE tokenizer of this size on the train captions (for training from scratch)')
  parser.add_argument('--context-length', type=int, default=77)
  parser.add_argument('--rows-per-shard', type=int, default=ROWS_PER_SHARD,
                      help='rows (CSV rows or grants) per block: one shard per split per block, the unit of resuming')
  parser.add_argument('--overwrite', action='store_true', help='rebuild a finished (or differently set up) output')
  parser.add_argument('--beam-runner', default='',
                      help='run as an Apache Beam pipeline on this runner (DirectRunner, DataflowRunner, ...)')
  parser.add_argument('--beam-options', default='', help='Beam pipeline options, e.g. "--direct_num_workers=4"')
  args = parser.parse_args(argv)
  if not args.redbook and not (args.csv and args.images):
    parser.error('give --csv and --images (IMPACT), or --redbook (Red Book grants, --csv optional)')
  if args.redbook and args.images:
    parser.error('--images is for IMPACT CSVs: each Red Book grant holds its own sheets')
  kwargs = dict(image_size=args.image_size, tokenizer_vocab=args.tokenizer_vocab,
                context_length=args.context_length, rows_per_shard=args.rows_per_shard, overwrite=args.overwrite)
  try:
    kwargs['split_files'] = _split_files(args.split_file)
    if args.redbook and args.beam_runner:
      raise IngestError('--redbook runs on the streaming path only; drop --beam-runner')
    if args.redbook:
      summary = ingest_redbook(args.redbook, args.out, csv_pattern=args.csv, workers=args.workers, **kwargs)
    elif args.beam_runner:
      from designclip_jax.data.ingest.beam import ingest_beam  # pylint: disable=import-outside-toplevel
      summary = ingest_beam(args.csv, args.images, args.out, beam_runner=args.beam_runner,
                            beam_options=args.beam_options, **kwargs)
    else:
      summary = ingest(args.csv, args.images, args.out, workers=args.workers, **kwargs)
  except IngestError as e:
    sys.exit(f'error: {e}')
  print_summary(summary)


if __name__ == '__main__':
  main()
