"""Blocks of records -> ArrayRecord shards, resumably: each block's records go to one file per split
(a temporary name until the block is complete), then a small JSON of the block's record metadata and
report lines marks it done. A finished output is refused unless overwritten; a partial one made with
other settings is refused too. The output may be a bucket (gs://…, through etils.epath): ArrayRecord's
writer writes local files only, so a block's shards are written to a local temporary folder and copied
up when the block is complete (array_record's own Beam DoFn for GCS does the same), and the work
directory, where a rerun finds the finished blocks, lives in the bucket."""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import tempfile

from etils import epath

from designclip_jax.data.ingest.errors import IngestError
from designclip_jax.data.ingest.rows import RowResult
from designclip_jax.data.layout import (CLASSES_FILE, PATENTS_FILE, RECORD_INDEX, REPORT_CSV, REPORT_JSON, SPLITS,
                                        TOKENIZER_DIR, dataset_dir_in, shard_name, write_metadata)
from designclip_jax.paths import is_url

WORK_DIR = '.ingest_work'
BEAM_WORK_DIR = '.beam_work'
ROWS_PER_SHARD = 1000
FORMAT_VERSION = 3  # of the work directory's block files


def block_meta(results: list[RowResult]) -> dict:
  """What finishing needs of a block, in record order: per split [patent id, label, views, caption,
  family, Locarno, drawing hashes], and the report lines."""
  records = {s: [] for s in SPLITS}
  mapping = collections.Counter()
  issues = []
  for r in results:
    issues += [[r.source, r.row, r.patent_id, reason, action] for reason, action in r.issues]
    if r.split is not None:
      ex = r.example
      records[r.split].append([ex['patent_id'], int(ex['label']), [int(v) for v in ex['views']], ex['caption'],
                               ex['family'], ex['locarno'], r.image_hashes])
      mapping[r.mapping] += 1
  return {'records': records, 'issues': issues, 'mapping': dict(mapping)}


def atomic_json(path: str, value) -> None:
  """Written whole or not at all (a bucket object only appears once its upload is complete)."""
  if is_url(path):
    epath.Path(path).write_text(json.dumps(value))
    return
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(value, f)
  os.replace(tmp, path)


def read_json(path: str):
  return json.loads(epath.Path(path).read_text())


def move(src: str, dst: str) -> None:
  """A finished file to its place: a rename on one disk; into or within a bucket, a copy, then a delete."""
  if is_url(dst):
    epath.Path(src).copy(dst, overwrite=True)
    epath.Path(src).unlink()
  else:
    os.replace(src, dst)


class BlockWriter:
  """Writes one block's records to one ArrayRecord file per split (temporary names until done)."""

  def __init__(self, work: str, block: int):
    self.work, self.block = work, block
    self.results, self.writers, self.sizes = [], {}, collections.Counter()
    self.local = tempfile.mkdtemp(prefix='designclip-block-') if is_url(work) else None  # where ArrayRecord writes

  def path(self, split: str) -> str:
    return os.path.join(self.work, f'block-{self.block:06d}.{split}.array_record')

  def temporary_path(self, split: str) -> str:
    return os.path.join(self.local or self.work, os.path.basename(self.path(split)) + '.tmp')

  def add(self, result: RowResult) -> None:
    if result.split is not None:
      path = self.temporary_path(result.split)
      try:
        if result.split not in self.writers:
          from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=import-outside-toplevel
          self.writers[result.split] = ArrayRecordWriter(path, 'group_size:1')
        self.writers[result.split].write(result.serialized)
      except Exception as e:  # pylint: disable=broad-except  (riegeli reports I/O failures as several types)
        raise IngestError(f'{path}: write failed ({e}); free space and run again to resume') from None
      self.sizes[result.split] += len(result.serialized)
      result.serialized = None
    self.results.append(result)

  def finish(self) -> None:
    for split, writer in self.writers.items():
      try:
        writer.close()
      except Exception as e:  # pylint: disable=broad-except
        raise IngestError(f'{self.temporary_path(split)}: write failed ({e}); free space and run again to resume') from None
      move(self.temporary_path(split), self.path(split))
    if self.local:
      shutil.rmtree(self.local, ignore_errors=True)
    meta = block_meta(self.results)
    meta.update(block=self.block, bytes=dict(self.sizes))
    atomic_json(os.path.join(self.work, f'block-{self.block:06d}.json'), meta)


def block_files(work: str) -> list[str]:
  return sorted(p.name for p in epath.Path(work).iterdir() if re.fullmatch(r'block-\d{6}\.json', p.name))


def done_blocks(work: str) -> set[int]:
  return {int(f[6:12]) for f in block_files(work)}


def block_metas(work: str):
  """``blocks()`` for ``finish``: the finished blocks' metadata, in record order, read one at a time."""
  return lambda: (read_json(os.path.join(work, f)) for f in block_files(work))


def is_finished(out: str) -> bool:
  return epath.Path(out, REPORT_JSON).is_file() and epath.Path(dataset_dir_in(out), 'dataset_info.json').is_file()


def _remove_outputs(out: str) -> None:
  """Everything ingestion writes under ``out`` (and nothing else there)."""
  for name in (WORK_DIR, os.path.dirname(dataset_dir_in(out)), TOKENIZER_DIR, BEAM_WORK_DIR):
    epath.Path(out, name).rmtree(missing_ok=True)
  for name in [CLASSES_FILE, REPORT_CSV, REPORT_JSON, PATENTS_FILE] + [RECORD_INDEX.format(split=s) for s in SPLITS]:
    epath.Path(out, name).unlink(missing_ok=True)


def prepare_output(out: str, settings: dict, overwrite: bool, work_name: str = WORK_DIR) -> str:
  """Refuse a finished output (unless ``overwrite``) or a partial one made with other settings;
  return the work directory, where a partial run's finished blocks are kept."""
  if overwrite:
    _remove_outputs(out)
  elif is_finished(out):
    raise IngestError(f'{out}: already holds a finished data set (see {REPORT_JSON}); pass --overwrite to rebuild it')
  work = os.path.join(out, work_name)
  settings_path = os.path.join(work, 'settings.json')
  if epath.Path(settings_path).is_file():
    previous = read_json(settings_path)
    if previous != settings:
      changed = sorted(k for k in settings if previous.get(k) != settings[k])
      raise IngestError(f'{settings_path}: a partial ingest with other settings ({", ".join(changed)}) is here; '
                        'pass --overwrite to start over')
  try:
    epath.Path(work).mkdir(parents=True, exist_ok=True)
    atomic_json(settings_path, settings)
  except OSError as e:
    raise IngestError(f'{e.filename or out}: cannot write ({e.strerror})') from None
  return work


def publish_shards(out: str, work: str, blocks) -> None:
  """Rename the blocks' files to TFDS's shard names and write the TFDS metadata (idempotent: a run
  killed half-way through renaming finishes the renaming)."""
  dataset_dir = dataset_dir_in(out)
  epath.Path(dataset_dir).mkdir(parents=True, exist_ok=True)
  shards = {s: [] for s in SPLITS}
  moves = []
  for meta in blocks():
    for split in SPLITS:
      if meta['records'][split]:
        moves.append((os.path.join(work, f'block-{meta["block"]:06d}.{split}.array_record'), split,
                      len(shards[split])))
        shards[split].append((len(meta['records'][split]), meta['bytes'][split]))
  for src, split, index in moves:
    dst = os.path.join(dataset_dir, shard_name(split, index, len(shards[split])))
    if epath.Path(src).exists():
      move(src, dst)
    elif not epath.Path(dst).exists():
      raise IngestError(f'{src}: missing from a partial ingest; pass --overwrite to start over')
  if any(shards.values()):
    write_metadata(dataset_dir, shards)
