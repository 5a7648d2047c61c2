"""The streaming ingestion drivers (IMPACT CSVs; Red Book grants): rows are cut into fixed blocks of
``rows_per_shard``; worker processes decode the drawings of a bounded window of rows at a time and this
process writes each block's records, in row order, to its shards (``writer``). A killed run started
again skips the finished blocks; the output does not depend on the worker count."""

from __future__ import annotations

import os

from etils import epath

from designclip_jax.data.ingest.captions import CaptionTable
from designclip_jax.data.ingest.csv_rows import check_csv_layout, check_inputs, read_rows, resolve_csvs
from designclip_jax.data.ingest.drawings import init_worker, process_row
from designclip_jax.data.ingest.errors import IngestError, worker_died
from designclip_jax.data.ingest.finish import finish
from designclip_jax.data.ingest.redbook_rows import plan, redbook_rows, scan, write_patents
from designclip_jax.data.ingest.sources import check_redbook_inputs
from designclip_jax.data.ingest.splits import FAMILY_RULE, ID_RULE, LIST_RULE, read_split_lists
from designclip_jax.data.ingest.writer import (FORMAT_VERSION, ROWS_PER_SHARD, BlockWriter, block_metas, done_blocks,
                                               prepare_output, publish_shards)
from designclip_jax.data.layout import PATENTS_FILE
from designclip_jax.data.parallel import WorkerDied, ordered_map
from designclip_jax.paths import absolute, is_url


def _fingerprint(path: str) -> list:
  where = epath.Path(path)
  return [absolute(path), where.stat().length if where.is_file() else None]


def _write_blocks(items, work: str, workers: int, image_size: int, progress: bool) -> None:
  """The decoding stage over ``items`` (RowItems in order, finished blocks left out), block by block."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  writer = None
  for result in tqdm(ordered_map(process_row, items, workers, initializer=init_worker, initargs=(image_size,)),
                     disable=not progress, desc='ingest rows', unit='row'):
    if writer is None or writer.block != result.block:
      if writer is not None:
        writer.finish()
      writer = BlockWriter(work, result.block)
    writer.add(result)
  if writer is not None:
    writer.finish()


def _run(out: str, work: str, stages, about_inputs: dict, image_size: int, tokenizer_vocab: int,
         context_length: int) -> dict:
  """Run ``stages()`` (writing the blocks), publish the shards and finish, with one-line errors."""
  try:
    more_about_inputs = stages() or {}
    blocks = block_metas(work)
    publish_shards(out, work, blocks)
    summary = finish(out, image_size, tokenizer_vocab, context_length, blocks, about_inputs | more_about_inputs)
  except OSError as e:
    raise IngestError(f'{e.filename or out}: write failed ({e.strerror or e}); free space and run again to resume') from None
  except WorkerDied as e:
    raise worker_died(e.item.block, f'{e.item.source} row {e.item.row}, {e.item.patent_id}') from None
  epath.Path(work).rmtree(missing_ok=True)
  return summary


def ingest(csv_pattern: str, images: str, out: str, *, image_size: int = 256, workers: int | None = None,
           tokenizer_vocab: int = 0, context_length: int = 77, progress: bool = True,
           rows_per_shard: int = ROWS_PER_SHARD, split_files: dict[str, str] | None = None,
           overwrite: bool = False) -> dict:
  """Build (or finish building) the data set under ``out`` from IMPACT CSVs and their drawings; return
  the summary (also saved as ingest_report.json) with the report lines under 'issues'."""
  csv_paths = check_inputs(csv_pattern, images)
  split_lists = read_split_lists(split_files) if split_files else None
  settings = {'format': FORMAT_VERSION, 'csv_files': [_fingerprint(p) for p in csv_paths],
              'images': absolute(images), 'image_size': image_size, 'rows_per_shard': rows_per_shard,
              'tokenizer_vocab': tokenizer_vocab, 'context_length': context_length,
              'split_files': {s: _fingerprint(p) for s, p in sorted((split_files or {}).items())}}
  work = prepare_output(out, settings, overwrite)
  workers = workers or min(4, os.cpu_count() or 1)

  def stages():
    done = done_blocks(work)
    todo = (item for item in read_rows(csv_paths, images, rows_per_shard, split_lists) if item.block not in done)
    _write_blocks(todo, work, workers, image_size, progress)

  about = {'csv_files': csv_paths, 'split_rule': LIST_RULE if split_lists else ID_RULE}
  return _run(out, work, stages, about, image_size, tokenizer_vocab, context_length)


def ingest_redbook(paths: list[str], out: str, *, csv_pattern: str | None = None, image_size: int = 256,
                   workers: int | None = None, tokenizer_vocab: int = 0, context_length: int = 77,
                   progress: bool = True, rows_per_shard: int = ROWS_PER_SHARD,
                   split_files: dict[str, str] | None = None, overwrite: bool = False) -> dict:
  """Build (or finish building) the data set under ``out`` from USPTO Red Book design grants (weekly tars,
  folders of grant ZIPs, per-patent folders), with IMPACT captions from ``csv_pattern`` where it has the
  patent; also writes ``patents.jsonl``. Returns the summary, as ``ingest``."""
  if any(map(is_url, [out, *paths])):
    raise IngestError('--redbook reads and writes local folders only; copy the grants here (gsutil -m cp -r), '
                      'ingest, and copy the output up')
  check_redbook_inputs(paths)
  csv_paths = resolve_csvs(csv_pattern) if csv_pattern else []
  for path in csv_paths:
    check_csv_layout(path)
  split_lists = read_split_lists(split_files) if split_files else None
  settings = {'format': FORMAT_VERSION, 'redbook': [_fingerprint(p) for p in paths],
              'csv_files': [_fingerprint(p) for p in csv_paths], 'image_size': image_size,
              'rows_per_shard': rows_per_shard, 'tokenizer_vocab': tokenizer_vocab, 'context_length': context_length,
              'split_files': {s: _fingerprint(p) for s, p in sorted((split_files or {}).items())}}
  work = prepare_output(out, settings, overwrite)
  workers = workers or min(4, os.cpu_count() or 1)

  def stages():
    kinds = scan(paths, work, rows_per_shard, workers, progress)
    captions = CaptionTable.build(csv_paths, os.path.join(work, 'captions.sqlite')) if csv_paths else None
    try:
      the_plan = plan(work, split_lists)
      done = done_blocks(work)
      todo = (item for item in redbook_rows(work, the_plan, captions, rows_per_shard) if item.block not in done)
      _write_blocks(todo, work, workers, image_size, progress)
      counts = write_patents(os.path.join(out, PATENTS_FILE), work, the_plan, captions)
      with_csv_row = counts.pop('grants_with_an_impact_csv_row')
      if captions is not None:
        counts['impact_csv_rows_without_a_grant'] = len(captions) - with_csv_row
    finally:
      if captions is not None:
        captions.close()
    return {'redbook': {'grants_found_by_kind': kinds, **counts, 'patents_file': os.path.join(out, PATENTS_FILE)}}

  about = {'redbook_inputs': list(paths), 'csv_files': csv_paths, 'split_rule': LIST_RULE if split_lists else FAMILY_RULE}
  return _run(out, work, stages, about, image_size, tokenizer_vocab, context_length)
