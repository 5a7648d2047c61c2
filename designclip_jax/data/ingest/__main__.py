"""IMPACT-format CSV + drawing sheets -> a TFDS ArrayRecord data set (no tensorflow needed).

    python -m designclip_jax.data.ingest --csv 'impact/*.csv' --images impact/ --out DATA_DIR
    # the same on Apache Beam (pip install '.[beam]'):
    python -m designclip_jax.data.ingest ... --beam-runner DirectRunner --beam-options='--direct_num_workers=4'

One record per patent: its images (front-page drawing first, then the sheets, each cropped to the
drawing, padded square, resized and PNG-encoded), the view label of each image, title, caption,
class index. Splits are by patent (a hash of the id), so no patent is in two splits. Bad rows are
skipped or repaired by a stated rule, never silently: every one is listed with CSV file, row and
reason in ``ingest_report.csv`` and counted in ``ingest_report.json`` beside the data set.

Streaming and resumable: a killed run started again skips the blocks it finished, and the output does
not depend on the worker count. When all blocks are done the shards are renamed to TFDS's names and
described with TFDS metadata, and ``record_index-<split>.npz`` (patent id, class, views per record, in
record order) is written for readers that must not touch the images. A finished output is refused
unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys

from designclip_jax.data.ingest.report import print_summary
from designclip_jax.data.ingest.rows import IngestError
from designclip_jax.data.ingest.stream import ingest
from designclip_jax.data.ingest.writer import ROWS_PER_SHARD


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--csv', required=True, help='CSV file or glob (quote it)')
  parser.add_argument('--images', required=True,
                      help='directory or zip holding the TIFF/PNG files (a directory may hold <csv stem>.zip per CSV)')
  parser.add_argument('--out', required=True, help='data set directory to write')
  parser.add_argument('--image-size', type=int, default=256, help='stored square size in pixels')
  parser.add_argument('--workers', type=int, default=None, help='decoding processes (default: up to 4)')
  parser.add_argument('--tokenizer-vocab', type=int, default=0,
                      help='also train a BPE tokenizer of this size on the train captions (for training from scratch)')
  parser.add_argument('--context-length', type=int, default=77)
  parser.add_argument('--rows-per-shard', type=int, default=ROWS_PER_SHARD,
                      help='CSV rows per block: one shard per split per block, the unit of resuming')
  parser.add_argument('--overwrite', action='store_true', help='rebuild a finished (or differently set up) output')
  parser.add_argument('--beam-runner', default='',
                      help='run as an Apache Beam pipeline on this runner (DirectRunner, DataflowRunner, ...)')
  parser.add_argument('--beam-options', default='', help='Beam pipeline options, e.g. "--direct_num_workers=4"')
  args = parser.parse_args(argv)
  kwargs = dict(image_size=args.image_size, tokenizer_vocab=args.tokenizer_vocab,
                context_length=args.context_length, overwrite=args.overwrite)
  try:
    if args.beam_runner:
      from designclip_jax.data.ingest.beam import ingest_beam  # pylint: disable=import-outside-toplevel
      summary = ingest_beam(args.csv, args.images, args.out, beam_runner=args.beam_runner,
                            beam_options=args.beam_options, rows_per_shard=args.rows_per_shard, **kwargs)
    else:
      summary = ingest(args.csv, args.images, args.out, workers=args.workers, rows_per_shard=args.rows_per_shard,
                       **kwargs)
  except IngestError as e:
    sys.exit(f'error: {e}')
  print_summary(summary)


if __name__ == '__main__':
  main()
