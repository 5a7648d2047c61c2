"""IMPACT-format CSV + drawing sheets -> a TFDS ArrayRecord data set (no tensorflow needed).

    python -m designclip_jax.data.ingest --csv 'impact/*.csv' --images impact/ --out DATA_DIR
    # the same on Apache Beam (pip install '.[beam]'):
    python -m designclip_jax.data.ingest ... --beam-runner DirectRunner --beam-options='--direct_num_workers=4'

One record per patent: its images (front-page drawing first, then the sheets, each cropped to the
drawing, padded square, resized and PNG-encoded), the view label of each image, title, caption,
class index. Splits are by patent (a hash of the id), so no patent is in two splits. Bad rows are
skipped or repaired by a stated rule, never silently: every one is listed with CSV file, row and
reason in ``ingest_report.csv`` and counted in ``ingest_report.json`` beside the data set.

Streaming and resumable: CSV rows are cut into fixed blocks of ``rows_per_shard`` rows; worker
processes decode the drawings of a bounded window of rows at a time and the parent writes each
block's records, in row order, to one ArrayRecord shard per split (a temporary name, renamed when
the block is complete, then a small JSON of the block's record metadata and report lines). A killed
run started again skips the finished blocks; the output does not depend on the worker count. When
all blocks are done the shards are renamed to TFDS's names and described with TFDS metadata, and
``record_index-<split>.npz`` (patent id, class, views per record, in record order) is written for
readers that must not touch the images. A finished output is refused unless ``overwrite``.
"""

from __future__ import annotations

import argparse
import array
import collections
import csv
import dataclasses
import glob
import hashlib
import json
import os
import re
import shutil
import sys
import zipfile

import numpy as np

from designclip_jax.data import images as image_ops
from designclip_jax.data.classes import CLASS_CODES, CLASS_NAMES, NUM_CLASSES
from designclip_jax.data.impact import IMPACT_COLUMNS, VIEWS, PatentRow, RowError, parse_row
from designclip_jax.data.parallel import ordered_map
from designclip_jax.data.layout import (CLASSES_FILE, RECORD_INDEX, SPLITS, TOKENIZER_DIR, dataset_dir_in, serialize,
                                        shard_name, write_metadata)

REPORT_CSV, REPORT_JSON = 'ingest_report.csv', 'ingest_report.json'
WORK_DIR = '.ingest_work'
ROWS_PER_SHARD = 1000
REQUIRED_COLUMNS = ('id', 'title', 'class', 'file_names', 'fig_desc', 'caption')
FORMAT_VERSION = 2  # of the work directory's block files


class IngestError(Exception):
  """Bad input or a failed write: a one-line message that names the file. A re-run resumes."""


def split_of(patent_id: str, fractions=(0.8, 0.1, 0.1)) -> str:
  """Deterministic split by patent id, independent of row order and of the other patents."""
  u = int(hashlib.sha256(patent_id.encode()).hexdigest()[:12], 16) / 16 ** 12
  return 'train' if u < fractions[0] else 'validation' if u < fractions[0] + fractions[1] else 'test'


@dataclasses.dataclass
class Issue:
  csv_file: str
  row: int  # 1-based data row (the header is not counted)
  patent_id: str
  reason: str
  action: str  # 'skipped' | 'repaired'


# ---------------------------------------------------------------------------------------------- images

def _candidate_names(name: str) -> list[str]:
  """Where a drawing may sit: NAME, STEM/NAME (one folder per patent, IMPACT's layout) and both under a
  YEAR/ folder (an unpacked yearly zip), STEM being the name up to '-D<sheet>'."""
  stem = name.rsplit('-D', 1)[0]
  year = re.search(r'-(\d{4})\d{4}$', stem)
  names = [name, f'{stem}/{name}']
  if year:
    names += [f'{year.group(1)}/{name}', f'{year.group(1)}/{stem}/{name}']
  return names


class ImageSource:
  """Reads drawings by file name from a directory or a zip archive. Opened once per process (it is
  never pickled): a zip keeps its handle, a directory is probed by path, so no per-file index of the
  whole tree is built."""

  def __init__(self, location: str):
    self.location = location
    self._zip = zipfile.ZipFile(location) if os.path.isfile(location) else None
    self._basenames = None  # zip members by base name, built on the first name not at a standard place

  def read(self, name: str) -> bytes:
    if self._zip is None:
      for candidate in _candidate_names(name):
        path = os.path.join(self.location, candidate)
        if os.path.isfile(path):
          with open(path, 'rb') as f:
            return f.read()
      raise FileNotFoundError(name)
    members = self._zip.NameToInfo
    member = next((c for c in _candidate_names(name) if c in members), None)
    if member is None:
      if self._basenames is None:
        self._basenames = {os.path.basename(n): n for n in members if not n.endswith('/')}
      member = self._basenames.get(name)
    if member is None:
      raise FileNotFoundError(name)
    return self._zip.read(member)

  def close(self):
    if self._zip is not None:
      self._zip.close()


def images_location(images: str, csv_path: str) -> str:
  """The drawings of one CSV: ``images`` itself, or ``images/<csv stem>.zip`` when ``images`` is a
  directory holding it (IMPACT ships ``2021.csv`` with ``2021.zip``)."""
  if os.path.isdir(images):
    paired = os.path.join(images, os.path.splitext(os.path.basename(csv_path))[0] + '.zip')
    if os.path.isfile(paired):
      return paired
  return images


def check_images(location: str) -> None:
  if os.path.isdir(location):
    return
  if not os.path.exists(location):
    raise IngestError(f'{location}: --images path does not exist')
  try:
    with zipfile.ZipFile(location) as zf:
      zf.infolist()
  except (zipfile.BadZipFile, OSError) as e:
    raise IngestError(f'{location}: not a readable zip file or directory ({e})') from None


# ------------------------------------------------------------------------------------------------ rows

@dataclasses.dataclass
class RowItem:
  """One CSV data row on its way through ingestion (what a worker receives: no image source)."""
  key: int               # csv index << 32 | row: the record order on both paths
  csv_file: str
  row: int
  patent_id: str
  patent: PatentRow | None  # None: rejected while parsing
  issues: list[tuple[str, str]]  # (reason, action), in the order they were found
  images: str            # the directory or zip to read this row's drawings from
  block: int = 0


@dataclasses.dataclass
class RowResult:
  key: int
  csv_file: str
  row: int
  patent_id: str
  issues: list[tuple[str, str]]
  split: str | None = None  # None: no record (skipped)
  example: dict | None = None  # the TFDS example (images as PNG bytes)
  serialized: bytes | None = None
  mapping: str | None = None
  block: int = 0


def resolve_csvs(csv_pattern: str) -> list[str]:
  paths = sorted(glob.glob(csv_pattern)) if any(c in csv_pattern for c in '*?[') else [csv_pattern]
  paths = [p for p in paths if os.path.isfile(p)]
  if not paths:
    raise IngestError(f'{csv_pattern}: --csv matches no file')
  return paths


def check_csv_layout(path: str) -> None:
  """A CSV must have IMPACT's header; anything else is refused before any work is done."""
  try:
    with open(path, newline='', encoding='utf-8') as f:
      header = next(csv.reader(f), [])
  except (OSError, UnicodeDecodeError) as e:
    raise IngestError(f'{path}: cannot read the CSV ({e})') from None
  missing = [c for c in REQUIRED_COLUMNS if c not in header]
  if missing:
    raise IngestError(f'{path}: not an IMPACT CSV: missing column(s) {missing} (expected {list(IMPACT_COLUMNS)})')


def parse_csv(path: str, csv_index: int, images: str):
  """RowItems of one CSV file, duplicates not yet resolved."""
  csv.field_size_limit(sys.maxsize)
  with open(path, newline='', encoding='utf-8') as f:
    for i, raw in enumerate(csv.DictReader(f), start=1):
      pid = (raw.get('id') or '').strip()
      try:
        patent = parse_row(raw)
      except RowError as e:
        yield RowItem(csv_index << 32 | i, path, i, pid, None, [(str(e), 'skipped')], images)
        continue
      yield RowItem(csv_index << 32 | i, path, i, pid, patent, [(r, 'repaired') for r in patent.repairs], images)


def duplicate_issue(first_csv: str, first_row: int) -> tuple[str, str]:
  return f'duplicate id (first seen at {os.path.basename(first_csv)} row {first_row})', 'skipped'


def read_rows(csv_paths: list[str], images: str, rows_per_shard: int):
  """Every data row of every CSV in order, with its block; a repeated id keeps its first row."""
  seen = {}
  number = 0
  for csv_index, path in enumerate(csv_paths):
    for item in parse_csv(path, csv_index, images_location(images, path)):
      item.block = number // rows_per_shard
      number += 1
      if item.patent is not None:
        first = seen.setdefault(item.patent_id, (path, item.row))
        if first != (path, item.row):
          item.issues, item.patent = [duplicate_issue(*first)], None
      yield item


def load_patent(item: RowItem, source: ImageSource, image_size: int) -> RowResult:
  """Read, preprocess and PNG-encode one row's drawings; unreadable ones are reported."""
  result = RowResult(item.key, item.csv_file, item.row, item.patent_id, list(item.issues), block=item.block)
  patent = item.patent
  if patent is None:
    return result
  encoded, views, problems = [], [], []
  for name, view in zip(patent.image_files, patent.image_views):
    try:
      gray = image_ops.preprocess_sheet(image_ops.load_gray(source.read(name)), image_size)
    except FileNotFoundError:
      problems.append(f'missing image: {name}')
      continue
    except Exception as e:  # pylint: disable=broad-except  (PIL raises many types for corrupt files)
      problems.append(f'unreadable image: {name} ({e.__class__.__name__})')
      continue
    encoded.append(image_ops.encode_png(gray))
    views.append(VIEWS.index(view))
  if not encoded:
    result.issues.append(('; '.join(problems) or 'no images', 'skipped'))
    return result
  result.issues += [(f'{p} (image dropped)', 'repaired') for p in problems]
  result.split, result.mapping = split_of(patent.patent_id), patent.mapping
  result.example = {'patent_id': patent.patent_id, 'title': patent.title, 'caption': patent.caption,
                    'label': patent.label, 'images': encoded, 'views': views}
  return result


_WORKER: dict = {}


def init_worker(image_size: int) -> None:
  _WORKER.clear()
  _WORKER.update(image_size=image_size, sources={})


def worker_source(location: str) -> ImageSource:
  """This process's image source for ``location``, opened on first use and kept (one at a time: rows
  arrive in CSV order, so a yearly zip serves a long run of rows)."""
  sources = _WORKER['sources']
  if location not in sources:
    for old in sources.values():
      old.close()
    sources.clear()
    sources[location] = ImageSource(location)
  return sources[location]


def _process_row(item: RowItem) -> RowResult:
  """Worker: one row -> its serialized record (only the row travels to the worker)."""
  result = load_patent(item, worker_source(item.images), _WORKER['image_size'])
  if result.example is not None:
    result.serialized = serialize(result.example)
    result.example = {k: v for k, v in result.example.items() if k != 'images'}  # metadata only back
  return result


# ---------------------------------------------------------------------------------------------- blocks

def block_meta(results: list[RowResult]) -> dict:
  """What finishing needs of a block, in record order: per split [patent id, label, views, caption],
  and the report lines."""
  records = {s: [] for s in SPLITS}
  mapping = collections.Counter()
  issues = []
  for r in results:
    issues += [[r.csv_file, r.row, r.patent_id, reason, action] for reason, action in r.issues]
    if r.split is not None:
      ex = r.example
      records[r.split].append([ex['patent_id'], int(ex['label']), [int(v) for v in ex['views']], ex['caption']])
      mapping[r.mapping] += 1
  return {'records': records, 'issues': issues, 'mapping': dict(mapping)}


def _atomic_json(path: str, value) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(value, f)
  os.replace(tmp, path)


class _BlockWriter:
  """Writes one block's records to one ArrayRecord file per split (temporary names until done)."""

  def __init__(self, work: str, block: int):
    self.work, self.block = work, block
    self.results, self.writers, self.sizes = [], {}, collections.Counter()

  def path(self, split: str) -> str:
    return os.path.join(self.work, f'block-{self.block:06d}.{split}.array_record')

  def add(self, result: RowResult) -> None:
    if result.split is not None:
      path = self.path(result.split) + '.tmp'
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
        raise IngestError(f'{self.path(split)}.tmp: write failed ({e}); free space and run again to resume') from None
      os.replace(self.path(split) + '.tmp', self.path(split))
    meta = block_meta(self.results)
    meta.update(block=self.block, bytes=dict(self.sizes))
    _atomic_json(os.path.join(self.work, f'block-{self.block:06d}.json'), meta)


def _block_files(work: str) -> list[str]:
  return sorted(f for f in os.listdir(work) if re.fullmatch(r'block-\d{6}\.json', f))


# ------------------------------------------------------------------------------------------------ main

def is_finished(out: str) -> bool:
  return os.path.isfile(os.path.join(out, REPORT_JSON)) and os.path.isfile(
      os.path.join(dataset_dir_in(out), 'dataset_info.json'))


def _remove_outputs(out: str) -> None:
  """Everything ingestion writes under ``out`` (and nothing else there)."""
  for name in (WORK_DIR, os.path.dirname(dataset_dir_in(out)), TOKENIZER_DIR, '.beam_work'):
    shutil.rmtree(os.path.join(out, name), ignore_errors=True)
  for name in [CLASSES_FILE, REPORT_CSV, REPORT_JSON] + [RECORD_INDEX.format(split=s) for s in SPLITS]:
    if os.path.exists(os.path.join(out, name)):
      os.remove(os.path.join(out, name))


def prepare_output(out: str, settings: dict, overwrite: bool, work_name: str = WORK_DIR) -> str:
  """Refuse a finished output (unless ``overwrite``) or a partial one made with other settings;
  return the work directory, where a partial run's finished blocks are kept."""
  if overwrite:
    _remove_outputs(out)
  elif is_finished(out):
    raise IngestError(f'{out}: already holds a finished data set (see {REPORT_JSON}); pass --overwrite to rebuild it')
  work = os.path.join(out, work_name)
  settings_path = os.path.join(work, 'settings.json')
  if os.path.isfile(settings_path):
    with open(settings_path) as f:
      previous = json.load(f)
    if previous != settings:
      changed = sorted(k for k in settings if previous.get(k) != settings[k])
      raise IngestError(f'{settings_path}: a partial ingest with other settings ({", ".join(changed)}) is here; '
                        'pass --overwrite to start over')
  try:
    os.makedirs(work, exist_ok=True)
    _atomic_json(settings_path, settings)
  except OSError as e:
    raise IngestError(f'{e.filename or out}: cannot write ({e.strerror})') from None
  return work


def _settings(csv_paths, images, image_size, rows_per_shard, tokenizer_vocab, context_length) -> dict:
  return {'format': FORMAT_VERSION, 'csv_files': [[os.path.abspath(p), os.path.getsize(p)] for p in csv_paths],
          'images': os.path.abspath(images), 'image_size': image_size, 'rows_per_shard': rows_per_shard,
          'tokenizer_vocab': tokenizer_vocab, 'context_length': context_length}


def check_inputs(csv_pattern: str, images: str) -> list[str]:
  csv_paths = resolve_csvs(csv_pattern)
  for path in csv_paths:
    check_csv_layout(path)
  check_images(images)
  for location in sorted({images_location(images, p) for p in csv_paths} - {images}):
    check_images(location)
  return csv_paths


def ingest(csv_pattern: str, images: str, out: str, *, image_size: int = 256, workers: int | None = None,
           tokenizer_vocab: int = 0, context_length: int = 77, progress: bool = True,
           rows_per_shard: int = ROWS_PER_SHARD, overwrite: bool = False) -> dict:
  """Build (or finish building) the data set under ``out``; return the summary (also saved as
  ingest_report.json) with the report lines under 'issues'."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  csv_paths = check_inputs(csv_pattern, images)
  work = prepare_output(out, _settings(csv_paths, images, image_size, rows_per_shard, tokenizer_vocab,
                                       context_length), overwrite)
  done = {int(f[6:12]) for f in _block_files(work)}
  todo = (item for item in read_rows(csv_paths, images, rows_per_shard) if item.block not in done)
  workers = workers or min(4, os.cpu_count() or 1)
  writer = None
  try:
    for result in tqdm(ordered_map(_process_row, todo, workers, initializer=init_worker, initargs=(image_size,)),
                       disable=not progress, desc='ingest rows', unit='row'):
      if writer is None or writer.block != result.block:
        if writer is not None:
          writer.finish()
        writer = _BlockWriter(work, result.block)
      writer.add(result)
    if writer is not None:
      writer.finish()
    blocks = lambda: (_read_json(os.path.join(work, f)) for f in _block_files(work))
    _publish_shards(out, work, blocks)
    summary = finish(out, csv_paths, image_size, tokenizer_vocab, context_length, blocks)
  except OSError as e:
    raise IngestError(f'{e.filename or out}: write failed ({e.strerror or e}); free space and run again to resume') from None
  shutil.rmtree(work, ignore_errors=True)
  return summary


def _read_json(path: str):
  with open(path) as f:
    return json.load(f)


def _publish_shards(out: str, work: str, blocks) -> None:
  """Rename the blocks' files to TFDS's shard names and write the TFDS metadata (idempotent: a run
  killed half-way through renaming finishes the renaming)."""
  dataset_dir = dataset_dir_in(out)
  os.makedirs(dataset_dir, exist_ok=True)
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
    if os.path.exists(src):
      os.replace(src, dst)
    elif not os.path.exists(dst):
      raise IngestError(f'{src}: missing from a partial ingest; pass --overwrite to start over')
  if any(shards.values()):
    write_metadata(dataset_dir, shards)


def finish(out: str, csv_paths: list[str], image_size: int, tokenizer_vocab: int, context_length: int,
           blocks) -> dict:
  """Record index, class table, report and tokenizer from the blocks' metadata (``blocks()`` yields
  them in record order); the report JSON is written last and marks the data set finished."""
  ids = {s: [] for s in SPLITS}
  labels, lengths, views = ({s: array.array(code) for s in SPLITS} for code in 'hqb')  # compact at IMPACT scale
  mapping, view_counts, skipped, repaired = (collections.Counter() for _ in range(4))
  issues = []
  for meta in blocks():
    issues += [Issue(*line) for line in meta['issues']]
    mapping.update(meta['mapping'])
    for split in SPLITS:
      for pid, label, record_views, _ in meta['records'][split]:
        ids[split].append(pid)
        labels[split].append(label)
        lengths[split].append(len(record_views))
        views[split].extend(record_views)
        view_counts.update(VIEWS[v] for v in record_views)
  with open(os.path.join(out, REPORT_CSV), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['csv_file', 'row', 'patent_id', 'action', 'reason'])
    writer.writerows([x.csv_file, x.row, x.patent_id, x.action, x.reason] for x in issues)
  if not any(ids.values()):
    raise IngestError(f'{os.path.join(out, REPORT_CSV)}: no row could be ingested; see the reasons there')
  for x in issues:
    (skipped if x.action == 'skipped' else repaired)[_reason_kind(x.reason)] += 1
  for split in SPLITS:
    if ids[split]:
      np.savez(os.path.join(out, RECORD_INDEX.format(split=split)), patent_id=np.array(ids[split]),
               label=np.array(labels[split], np.int16),
               view_offsets=np.concatenate([[0], np.cumsum(np.array(lengths[split], np.int64))]),
               views=np.array(views[split], np.int8))
  train_counts = np.bincount(np.array(labels['train'], np.int64), minlength=NUM_CLASSES)
  with open(os.path.join(out, CLASSES_FILE), 'w') as f:
    json.dump({'codes': list(CLASS_CODES), 'names': list(CLASS_NAMES), 'train_counts': train_counts.tolist(),
               'views': list(VIEWS)}, f, indent=1)
  if tokenizer_vocab:
    from designclip_jax.data.tokenizer import train_bpe  # pylint: disable=import-outside-toplevel
    captions = (caption for meta in blocks() for _, _, _, caption in meta['records']['train'])
    train_bpe(_chain(captions, [f'a sketch of {n}' for n in CLASS_NAMES]), tokenizer_vocab,
              context_length).save(os.path.join(out, TOKENIZER_DIR))
  summary = {
      'csv_files': csv_paths, 'rows_read': sum(map(len, ids.values())) + sum(skipped.values()),
      'patents_ingested': {s: len(v) for s, v in ids.items()},
      'rows_skipped': sum(skipped.values()), 'skipped_by_reason': dict(skipped),
      'rows_repaired_by_reason': dict(repaired), 'sheet_to_figure_mapping': dict(mapping),
      'images_by_view': dict(view_counts), 'image_size': image_size, 'dataset_dir': dataset_dir_in(out),
  }
  _atomic_json(os.path.join(out, REPORT_JSON), summary)
  return summary | {'issues': issues}


def _chain(*iterables):
  for it in iterables:
    yield from it


def _reason_kind(reason: str) -> str:
  """Group reasons for counting: the text before the first colon (details follow it)."""
  return reason.split(':')[0].strip()


def print_summary(summary: dict, out=None, max_lines: int = 200) -> None:
  out = out or sys.stdout
  for x in summary['issues'][:max_lines]:
    print(f'{x.action}: {os.path.basename(x.csv_file)} row {x.row} ({x.patent_id or "no id"}): {x.reason}', file=out)
  if len(summary['issues']) > max_lines:
    print(f'... {len(summary["issues"]) - max_lines} more in {REPORT_CSV}', file=out)
  print('\ningestion summary', file=out)
  for key in ('rows_read', 'patents_ingested', 'rows_skipped', 'skipped_by_reason', 'rows_repaired_by_reason',
              'sheet_to_figure_mapping', 'images_by_view', 'dataset_dir'):
    print(f'  {key}: {summary[key]}', file=out)


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
      from designclip_jax.data import beam_ingest  # pylint: disable=import-outside-toplevel
      summary = beam_ingest.ingest_beam(args.csv, args.images, args.out, beam_runner=args.beam_runner,
                                        beam_options=args.beam_options, **kwargs)
    else:
      summary = ingest(args.csv, args.images, args.out, workers=args.workers, rows_per_shard=args.rows_per_shard,
                       **kwargs)
  except IngestError as e:
    sys.exit(f'error: {e}')
  print_summary(summary)


if __name__ == '__main__':
  main()
