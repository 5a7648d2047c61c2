"""The streaming ingestion driver: rows are cut into fixed blocks of ``rows_per_shard``; worker
processes decode the drawings of a bounded window of rows at a time and this process writes each
block's records, in row order, to its shards (``writer``). A killed run started again skips the
finished blocks; the output does not depend on the worker count."""

from __future__ import annotations

import os
import shutil

from designclip_jax.data.ingest.csv_rows import check_inputs, read_rows
from designclip_jax.data.ingest.drawings import init_worker, process_row
from designclip_jax.data.ingest.finish import finish
from designclip_jax.data.ingest.rows import IngestError
from designclip_jax.data.ingest.writer import (FORMAT_VERSION, ROWS_PER_SHARD, BlockWriter, block_metas, done_blocks,
                                               prepare_output, publish_shards)
from designclip_jax.data.parallel import WorkerDied, ordered_map


def _settings(csv_paths, images, image_size, rows_per_shard, tokenizer_vocab, context_length) -> dict:
  return {'format': FORMAT_VERSION, 'csv_files': [[os.path.abspath(p), os.path.getsize(p)] for p in csv_paths],
          'images': os.path.abspath(images), 'image_size': image_size, 'rows_per_shard': rows_per_shard,
          'tokenizer_vocab': tokenizer_vocab, 'context_length': context_length}


def worker_died_message(item) -> str:
  """One line for a decoding worker that died: the block to resume from, and the likely causes."""
  return (f'block {item.block}: a decoding worker process died ({item.csv_file} row {item.row}, {item.patent_id} '
          'or a row beside it, unfinished): killed by the system (out of memory?) or crashed in a decoder; '
          'the finished blocks are kept: run the same command again to resume (fewer --workers if memory ran out)')


def ingest(csv_pattern: str, images: str, out: str, *, image_size: int = 256, workers: int | None = None,
           tokenizer_vocab: int = 0, context_length: int = 77, progress: bool = True,
           rows_per_shard: int = ROWS_PER_SHARD, overwrite: bool = False) -> dict:
  """Build (or finish building) the data set under ``out`` from IMPACT CSVs and their drawings; return
  the summary (also saved as ingest_report.json) with the report lines under 'issues'."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  csv_paths = check_inputs(csv_pattern, images)
  work = prepare_output(out, _settings(csv_paths, images, image_size, rows_per_shard, tokenizer_vocab,
                                       context_length), overwrite)
  done = done_blocks(work)
  todo = (item for item in read_rows(csv_paths, images, rows_per_shard) if item.block not in done)
  workers = workers or min(4, os.cpu_count() or 1)
  writer = None
  try:
    for result in tqdm(ordered_map(process_row, todo, workers, initializer=init_worker, initargs=(image_size,)),
                       disable=not progress, desc='ingest rows', unit='row'):
      if writer is None or writer.block != result.block:
        if writer is not None:
          writer.finish()
        writer = BlockWriter(work, result.block)
      writer.add(result)
    if writer is not None:
      writer.finish()
    blocks = block_metas(work)
    publish_shards(out, work, blocks)
    summary = finish(out, csv_paths, image_size, tokenizer_vocab, context_length, blocks)
  except OSError as e:
    raise IngestError(f'{e.filename or out}: write failed ({e.strerror or e}); free space and run again to resume') from None
  except WorkerDied as e:
    raise IngestError(worker_died_message(e.item)) from None
  shutil.rmtree(work, ignore_errors=True)
  return summary
