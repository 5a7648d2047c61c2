"""The IMPACT CSV reader: CSV files -> RowItems in CSV order, with the duplicate-id rule."""

from __future__ import annotations

import csv
import os
import sys

from designclip_jax.data.impact import IMPACT_COLUMNS, RowError, parse_row
from designclip_jax.data.redbook import patent_number
from designclip_jax.data.ingest.errors import IngestError
from designclip_jax.data.ingest.rows import RowItem
from designclip_jax.data.ingest.sources import check_images, images_location, matching_files, open_text
from designclip_jax.data.ingest.splits import split_of

REQUIRED_COLUMNS = ('id', 'title', 'class', 'file_names', 'fig_desc', 'caption')


def resolve_csvs(csv_pattern: str) -> list[str]:
  paths = matching_files(csv_pattern)
  if not paths:
    raise IngestError(f'{csv_pattern}: --csv matches no file')
  return paths


def check_csv_layout(path: str) -> None:
  """A CSV must have IMPACT's header; anything else is refused before any work is done."""
  try:
    with open_text(path) as f:
      header = next(csv.reader(f), [])
  except (OSError, UnicodeDecodeError) as e:
    raise IngestError(f'{path}: cannot read the CSV ({e})') from None
  missing = [c for c in REQUIRED_COLUMNS if c not in header]
  if missing:
    raise IngestError(f'{path}: not an IMPACT CSV: missing column(s) {missing} (expected {list(IMPACT_COLUMNS)})')


def check_inputs(csv_pattern: str, images: str) -> list[str]:
  """The CSV files of ``csv_pattern``, each checked, and every drawing location they will read."""
  csv_paths = resolve_csvs(csv_pattern)
  for path in csv_paths:
    check_csv_layout(path)
  check_images(images)
  for location in sorted({images_location(images, p) for p in csv_paths} - {images}):
    check_images(location)
  return csv_paths


def parse_csv(path: str, csv_index: int, images: str, split_lists: dict[str, str] | None = None):
  """RowItems of one CSV file, duplicates not yet resolved. A row's split: its list's (``split_lists``,
  a row in no list is skipped), else the hash of its id; its family is itself (a CSV has no families)."""
  csv.field_size_limit(sys.maxsize)
  with open_text(path) as f:
    for i, raw in enumerate(csv.DictReader(f), start=1):
      pid = (raw.get('id') or '').strip()
      item = RowItem(csv_index << 32 | i, path, i, pid, None, [], images, family=pid)
      try:
        item.patent = parse_row(raw)
      except RowError as e:
        item.issues.append((str(e), 'skipped'))
        yield item
        continue
      item.issues += [(r, 'repaired') for r in item.patent.repairs]
      item.split = split_of(pid) if split_lists is None else split_lists.get(patent_number(pid) or pid)
      if item.split is None:
        item.issues.append(('not in any --split-file list', 'skipped'))
      yield item


def duplicate_issue(first_csv: str, first_row: int) -> tuple[str, str]:
  return f'duplicate id (first seen at {os.path.basename(first_csv)} row {first_row})', 'skipped'


def read_rows(csv_paths: list[str], images: str, rows_per_shard: int, split_lists: dict[str, str] | None = None):
  """Every data row of every CSV in order, with its block; a repeated id keeps its first row."""
  seen = {}
  number = 0
  for csv_index, path in enumerate(csv_paths):
    for item in parse_csv(path, csv_index, images_location(images, path), split_lists):
      item.block = number // rows_per_shard
      number += 1
      if item.patent is not None:
        first = seen.setdefault(item.patent_id, (path, item.row))
        if first != (path, item.row):
          item.issues, item.patent = [duplicate_issue(*first)], None
      yield item
