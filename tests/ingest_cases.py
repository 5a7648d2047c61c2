"""Shared by the ingestion tests: a copy of a synthetic CSV with one planted problem per kind; a task
whose worker dies."""

import ast
import csv
import os
import signal


def square_or_die(x):
  """A worker task for ordered_map (importable, so spawned workers find it): item 5 kills its own worker
  process, as the kernel's OOM killer or a crashing decoder would."""
  if x == 5:
    os.kill(os.getpid(), signal.SIGKILL)
  return x * x


def plant_bad_rows(csv_path, raw_dir, out_csv):
  """Copy the CSV, planting one problem per kind; return {(row, patent id): expected reason prefix}."""
  with open(csv_path, newline='') as f:
    rows = list(csv.DictReader(f))
  expected = {}

  def first_sheet(row):
    name = ast.literal_eval(row['file_names'])[1]
    return os.path.join(raw_dir, name.rsplit('-D', 1)[0], name)

  rows[2]['class'] = 'D31123'
  expected[(3, rows[2]['id'])] = ('skipped', 'unknown class')
  rows[4]['caption'] = '   '
  expected[(5, rows[4]['id'])] = ('repaired', 'empty caption replaced by the title')
  rows[6]['file_names'] = rows[6]['file_names'][:-2]
  expected[(7, rows[6]['id'])] = ('skipped', 'malformed list in file_names')
  rows[8]['fig_desc'] = repr(['FIG. 1 is a drawing of the design.', 'FIG. 2 is another drawing.'])
  expected[(9, rows[8]['id'])] = ('repaired', 'fig_desc names no view')
  os.remove(first_sheet(rows[10]))
  expected[(11, rows[10]['id'])] = ('repaired', 'missing image')
  with open(first_sheet(rows[12]), 'wb') as f:
    f.write(b'not a tiff at all')
  expected[(13, rows[12]['id'])] = ('repaired', 'unreadable image')
  for name in ast.literal_eval(rows[14]['file_names']):
    os.remove(os.path.join(raw_dir, name.rsplit('-D', 1)[0], name))
  expected[(15, rows[14]['id'])] = ('skipped', 'missing image')
  rows.append(dict(rows[0]))
  expected[(len(rows), rows[0]['id'])] = ('skipped', 'duplicate id')
  with open(out_csv, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return expected, len(rows)
