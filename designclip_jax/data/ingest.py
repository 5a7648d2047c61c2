"""IMPACT-format CSV + drawing sheets -> a TFDS ArrayRecord data set (no tensorflow needed).

    python -m designclip_jax.data.ingest --csv 'impact/*.csv' --images impact/ --out DATA_DIR

One record per patent: its images (front-page drawing first, then the sheets, each cropped to the
drawing, padded square, resized and PNG-encoded), the view label of each image, title, caption,
class index. Splits are by patent (a hash of the id), so no patent is in two splits. Bad rows are
skipped or repaired by a stated rule, never silently: every one is listed with CSV file, row and
reason in ``ingest_report.csv`` and counted in ``ingest_report.json`` beside the data set.
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import glob
import hashlib
import json
import multiprocessing
import os
import sys
import zipfile

import numpy as np

from designclip_jax.data import images as image_ops
from designclip_jax.data.classes import CLASS_CODES, CLASS_NAMES, NUM_CLASSES
from designclip_jax.data.impact import VIEWS, RowError, parse_row

from designclip_jax.data.tfds_builder import SPLITS
CLASSES_FILE = 'classes.json'
REPORT_CSV, REPORT_JSON = 'ingest_report.csv', 'ingest_report.json'
TOKENIZER_DIR = 'tokenizer'


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


class ImageSource:
  """Finds an image by file name under a directory tree or inside a zip archive."""

  def __init__(self, location: str):
    self.location = location
    self.is_zip = zipfile.is_zipfile(location) if os.path.isfile(location) else False
    if not self.is_zip and not os.path.isdir(location):
      raise FileNotFoundError(f'--images {location!r} is neither a directory nor a zip file')
    self._zip = None
    if self.is_zip:
      with zipfile.ZipFile(location) as zf:
        self.index = {os.path.basename(n): n for n in zf.namelist() if not n.endswith('/')}
    else:
      self.index = {}
      for root, _, files in os.walk(location):
        for name in files:
          self.index.setdefault(name, os.path.join(root, name))

  def read(self, name: str) -> bytes:
    if name not in self.index:
      raise FileNotFoundError(f'image {name} not found under {self.location}')
    if self.is_zip:
      if self._zip is None:
        self._zip = zipfile.ZipFile(self.location)
      return self._zip.read(self.index[name])
    with open(self.index[name], 'rb') as f:
      return f.read()

  def __getstate__(self):  # zip handles do not cross process boundaries
    return {**self.__dict__, '_zip': None}


def _load_images(args):
  """Worker: read, preprocess and PNG-encode one patent's images; unreadable ones are reported."""
  patent, source, size = args
  encoded, views, problems = [], [], []
  for name, view in zip(patent.image_files, patent.image_views):
    try:
      gray = image_ops.preprocess_sheet(image_ops.load_gray(source.read(name)), size)
    except FileNotFoundError:
      problems.append(f'missing image: {name}')
      continue
    except Exception as e:  # pylint: disable=broad-except  (PIL raises many types for corrupt files)
      problems.append(f'unreadable image: {name} ({e.__class__.__name__})')
      continue
    encoded.append(image_ops.encode_png(gray))
    views.append(VIEWS.index(view))
  return patent, encoded, views, problems


def read_rows(csv_paths: list[str], issues: list[Issue], counter: collections.Counter):
  """Parse every CSV row; rejected rows are recorded in ``issues`` and not returned."""
  csv.field_size_limit(sys.maxsize)
  seen = {}
  for path in csv_paths:
    with open(path, newline='', encoding='utf-8') as f:
      for i, raw in enumerate(csv.DictReader(f), start=1):
        counter['rows_read'] += 1
        pid = (raw.get('id') or '').strip()
        try:
          patent = parse_row(raw)
        except RowError as e:
          issues.append(Issue(path, i, pid, str(e), 'skipped'))
          continue
        if patent.patent_id in seen:
          issues.append(Issue(path, i, pid, f'duplicate id (first seen at {seen[patent.patent_id]})', 'skipped'))
          continue
        seen[patent.patent_id] = f'{os.path.basename(path)} row {i}'
        for repair in patent.repairs:
          issues.append(Issue(path, i, pid, repair, 'repaired'))
        yield path, i, patent


def ingest(csv_pattern: str, images: str, out: str, *, image_size: int = 256, workers: int | None = None,
           tokenizer_vocab: int = 0, context_length: int = 77, progress: bool = True) -> dict:
  """Build the data set under ``out``; return the summary (also saved as ingest_report.json)."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  csv_paths = sorted(glob.glob(csv_pattern)) if any(c in csv_pattern for c in '*?[') else [csv_pattern]
  csv_paths = [p for p in csv_paths if os.path.isfile(p)]
  if not csv_paths:
    raise FileNotFoundError(f'--csv {csv_pattern!r} matches no file')
  source = ImageSource(images)
  issues: list[Issue] = []
  counter = collections.Counter()
  rows = list(read_rows(csv_paths, issues, counter))
  mapping_counts = collections.Counter(p.mapping for _, _, p in rows)
  examples = {s: [] for s in SPLITS}
  view_counts = collections.Counter()
  train_counts = np.zeros(NUM_CLASSES, np.int64)
  workers = workers or min(4, os.cpu_count() or 1)
  jobs = [(p, source, image_size) for _, _, p in rows]
  where = {p.patent_id: (path, i) for path, i, p in rows}
  pool = multiprocessing.get_context('spawn').Pool(workers) if workers > 1 else None
  try:
    results = pool.imap(_load_images, jobs, chunksize=8) if pool else map(_load_images, jobs)
    for patent, encoded, views, problems in tqdm(results, total=len(jobs), disable=not progress,
                                                 desc='ingest rows', unit='row'):
      path, i = where[patent.patent_id]
      if not encoded:
        issues.append(Issue(path, i, patent.patent_id, '; '.join(problems) or 'no images', 'skipped'))
        continue
      for problem in problems:
        issues.append(Issue(path, i, patent.patent_id, f'{problem} (image dropped)', 'repaired'))
      split = split_of(patent.patent_id)
      examples[split].append((patent.patent_id, {
          'patent_id': patent.patent_id, 'title': patent.title, 'caption': patent.caption,
          'label': patent.label, 'images': encoded, 'views': views}))
      view_counts.update(VIEWS[v] for v in views)
      if split == 'train':
        train_counts[patent.label] += 1
  finally:
    if pool:
      pool.close()
      pool.join()
  if not any(examples.values()):
    raise ValueError('no row could be ingested; see the reasons above')

  from designclip_jax.data.tfds_builder import builder_class  # pylint: disable=import-outside-toplevel
  builder_cls = builder_class()
  builder_cls.examples = examples
  os.makedirs(out, exist_ok=True)
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  tfds.disable_progress_bar()
  builder = builder_cls(data_dir=out, file_format='array_record')
  builder.download_and_prepare()

  with open(os.path.join(out, CLASSES_FILE), 'w') as f:
    json.dump({'codes': list(CLASS_CODES), 'names': list(CLASS_NAMES), 'train_counts': train_counts.tolist(),
               'views': list(VIEWS)}, f, indent=1)
  if tokenizer_vocab:
    from designclip_jax.data.tokenizer import train_bpe  # pylint: disable=import-outside-toplevel
    captions = [ex['caption'] for _, ex in examples['train']] + [f'a sketch of {n}' for n in CLASS_NAMES]
    train_bpe(captions, tokenizer_vocab, context_length).save(os.path.join(out, TOKENIZER_DIR))

  reasons = collections.Counter(_reason_kind(x.reason) for x in issues if x.action == 'skipped')
  repairs = collections.Counter(_reason_kind(x.reason) for x in issues if x.action == 'repaired')
  summary = {
      'csv_files': csv_paths, 'rows_read': counter['rows_read'],
      'patents_ingested': {s: len(v) for s, v in examples.items()},
      'rows_skipped': sum(reasons.values()), 'skipped_by_reason': dict(reasons),
      'rows_repaired_by_reason': dict(repairs), 'sheet_to_figure_mapping': dict(mapping_counts),
      'images_by_view': dict(view_counts), 'image_size': image_size,
      'dataset_dir': builder.data_dir,
  }
  with open(os.path.join(out, REPORT_CSV), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['csv_file', 'row', 'patent_id', 'action', 'reason'])
    writer.writerows([x.csv_file, x.row, x.patent_id, x.action, x.reason] for x in issues)
  with open(os.path.join(out, REPORT_JSON), 'w') as f:
    json.dump(summary, f, indent=1)
  return summary | {'issues': issues}


def _reason_kind(reason: str) -> str:
  """Group reasons for counting: the text before the first colon (details follow it)."""
  return reason.split(':')[0].strip()


def print_summary(summary: dict, out=None) -> None:
  out = out or sys.stdout
  for x in summary['issues']:
    print(f'{x.action}: {os.path.basename(x.csv_file)} row {x.row} ({x.patent_id or "no id"}): {x.reason}', file=out)
  print('\ningestion summary', file=out)
  for key in ('rows_read', 'patents_ingested', 'rows_skipped', 'skipped_by_reason', 'rows_repaired_by_reason',
              'sheet_to_figure_mapping', 'images_by_view', 'dataset_dir'):
    print(f'  {key}: {summary[key]}', file=out)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--csv', required=True, help='CSV file or glob (quote it)')
  parser.add_argument('--images', required=True, help='directory tree or zip holding the TIFF/PNG files')
  parser.add_argument('--out', required=True, help='data set directory to write')
  parser.add_argument('--image-size', type=int, default=256, help='stored square size in pixels')
  parser.add_argument('--workers', type=int, default=None)
  parser.add_argument('--tokenizer-vocab', type=int, default=0,
                      help='also train a BPE tokenizer of this size on the train captions (for training from scratch)')
  parser.add_argument('--context-length', type=int, default=77)
  args = parser.parse_args(argv)
  summary = ingest(args.csv, args.images, args.out, image_size=args.image_size, workers=args.workers,
                   tokenizer_vocab=args.tokenizer_vocab, context_length=args.context_length)
  print_summary(summary)


if __name__ == '__main__':
  main()
