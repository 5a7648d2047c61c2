"""Embedded synthetic design-patent set, in the IMPACT layout (CSV + 1-bit group-4 TIFF sheets) or,
with ``--layout redbook``, the USPTO Red Book layout (weekly tars of per-patent ZIPs with the grant
XML: Locarno codes, families, examiner and applicant citations; see synthetic_redbook).

Each of the 33 USPC design classes is a family of procedural 3D objects (synthetic_drawing); two
patents of a class differ visibly while all views of one patent show the same object. Class sizes
follow IMPACT's long tail. Same arguments -> byte-identical files.

    python -m designclip_jax.data.synthetic --out /tmp/synth --patents 2000 --seed 0
    python -m designclip_jax.data.synthetic --layout redbook --out /tmp/redbook --patents 2000 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import os

import numpy as np

from designclip_jax.data import synthetic_redbook
from designclip_jax.data.classes import CLASS_CODES
from designclip_jax.data.impact import IMPACT_COLUMNS
from designclip_jax.data.parallel import ordered_map
from designclip_jax.data.synthetic_articles import LOCARNO, NOUNS, caption, class_counts
from designclip_jax.data.synthetic_drawing import draw_sheets, pick_dashed, sample_object


def make_patent(index: int, label: int, seed: int) -> tuple[dict[str, str], dict[str, bytes]]:
  """One patent of the IMPACT layout: its CSV row and its image files (name -> TIFF bytes)."""
  rng = np.random.default_rng([seed, index])
  code = CLASS_CODES[label]
  patent_num = 900000 + index
  date = f'2021{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}'
  stem = f'USD0{patent_num}-{date}'
  noun = NOUNS[code][int(rng.integers(len(NOUNS[code])))]
  parts = sample_object(label, rng)
  dashed = pick_dashed(parts, rng)
  sheets = draw_sheets(parts, dashed, noun, stem, rng)
  number = int(code[1:])
  subclass = int(rng.integers(100, 999))
  uspc = f'D{number:>2}{subclass}'
  row = {
      'title': noun.capitalize(), 'id': f'D0{patent_num}',
      'claim': f'The ornamental design for a {noun}, as shown and described.',
      'date': date, 'class': uspc, 'class_search': repr([LOCARNO[noun], uspc]),
      'inv_country': 'US', 'no_figs': str(len(sheets.fig_desc)), 'sheets': str(len(sheets.sheet_figures)),
      'file_names': repr(list(sheets.files)), 'fig_desc': repr(sheets.fig_desc), 'caption': caption(noun, parts, code),
  }
  return row, sheets.files


def _make_and_write(args):
  index, label, seed, out = args
  row, files = make_patent(index, label, seed)
  folder = os.path.join(out, next(iter(files)).rsplit('-D', 1)[0])
  os.makedirs(folder, exist_ok=True)
  for name, data in files.items():
    with open(os.path.join(folder, name), 'wb') as f:
      f.write(data)
  return row


def generate(out: str, n_patents: int, seed: int = 0, workers: int | None = None, progress: bool = True) -> str:
  """Write the IMPACT-layout set under ``out`` (``synthetic.csv`` + one folder per patent); return the
  CSV path. Rows are written as patents are drawn (bounded memory at any size)."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  os.makedirs(out, exist_ok=True)
  labels = np.repeat(np.arange(len(CLASS_CODES)), class_counts(n_patents))
  labels = np.random.default_rng([seed, 1]).permutation(labels)
  jobs = ((i, int(label), seed, out) for i, label in enumerate(labels))
  workers = workers or min(4, os.cpu_count() or 1)
  path = os.path.join(out, 'synthetic.csv')
  with open(path + '.tmp', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=IMPACT_COLUMNS)
    writer.writeheader()
    for row in tqdm(ordered_map(_make_and_write, jobs, workers), total=len(labels), disable=not progress,
                    desc='synthetic patents', unit='patent'):
      writer.writerow(row)
  os.replace(path + '.tmp', path)
  return path


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', required=True, help='output directory')
  parser.add_argument('--patents', type=int, default=2000, help='number of patents (>= 99 for the IMPACT layout)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--layout', choices=('impact', 'redbook'), default='impact',
                      help='impact: synthetic.csv + one folder of TIFF sheets per patent; redbook: weekly '
                           'I<date>.tar of DESIGN/USD<number>-<date>.ZIP (grant XML + sheets) + synthetic.csv')
  parser.add_argument('--weeks', type=int, default=None,
                      help='redbook: weekly issues the grants spread over (default: about 12 patents a week, '
                           'at most 417, ending 2022-12-27)')
  parser.add_argument('--workers', type=int, default=None, help='processes (default: up to 4)')
  args = parser.parse_args(argv)
  if args.layout == 'impact':
    if args.weeks is not None:
      parser.error('--weeks applies to --layout redbook only')
    path = generate(args.out, args.patents, args.seed, args.workers)
    print(f'wrote {args.patents} patents to {path}')
    return
  try:
    tars = synthetic_redbook.generate(args.out, args.patents, args.seed, args.weeks, args.workers)
  except ValueError as e:
    parser.error(str(e))
  print(f'wrote {args.patents} patents in {len(tars)} weekly tars to {args.out} '
        f'(and their IMPACT rows to {os.path.join(args.out, "synthetic.csv")})')


if __name__ == '__main__':
  main()
