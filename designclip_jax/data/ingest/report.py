"""The ingestion report: one line per skipped or repaired row (``ingest_report.csv``), counts by reason,
and the printed summary."""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import os
import sys

from etils import epath

from designclip_jax.data.layout import REPORT_CSV

SUMMARY_KEYS = ('rows_read', 'patents_ingested', 'rows_skipped', 'skipped_by_reason', 'rows_repaired_by_reason',
                'rows_noted_by_reason', 'sheet_to_figure_mapping', 'images_by_view', 'records_without_locarno',
                'split_rule', 'leakage_across_splits', 'redbook', 'dataset_dir')


@dataclasses.dataclass
class Issue:
  source: str
  row: int  # 1-based: the CSV data row (the header is not counted), or the grant's place in the Red Book input
  patent_id: str
  reason: str
  action: str  # 'skipped' | 'repaired' (kept, changed by a stated rule) | 'noted' (kept as read, worth knowing)


def write_report(out: str, issues: list[Issue]) -> None:
  with io.TextIOWrapper(epath.Path(out, REPORT_CSV).open('wb'), encoding='utf-8', newline='') as f:  # local or gs://
    writer = csv.writer(f)
    writer.writerow(['source', 'row', 'patent_id', 'action', 'reason'])
    writer.writerows([x.source, x.row, x.patent_id, x.action, x.reason] for x in issues)


def reason_kind(reason: str) -> str:
  """Group reasons for counting: the text before the first colon (details follow it)."""
  return reason.split(':')[0].strip()


def count_by_action(issues: list[Issue]) -> dict[str, collections.Counter]:
  counts = collections.defaultdict(collections.Counter)
  for x in issues:
    counts[x.action][reason_kind(x.reason)] += 1
  return counts


def print_summary(summary: dict, out=None, max_lines: int = 200) -> None:
  out = out or sys.stdout
  for x in summary['issues'][:max_lines]:
    print(f'{x.action}: {os.path.basename(x.source)} row {x.row} ({x.patent_id or "no id"}): {x.reason}', file=out)
  if len(summary['issues']) > max_lines:
    print(f'... {len(summary["issues"]) - max_lines} more in {REPORT_CSV}', file=out)
  print('\ningestion summary', file=out)
  for key in SUMMARY_KEYS:
    if key in summary:
      print(f'  {key}: {summary[key]}', file=out)
