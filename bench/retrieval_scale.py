"""Image-retrieval scoring at the DeepPatent test size (13,133 queries x 38,834 gallery, D=512, random
embeddings) with DeepPatent's real label counts, at 10x the gallery, and class-level (a few labels of
thousands of items each): wall time, process CPU time (user + system: less sensitive than wall time to
other jobs on a shared machine) and peak resident memory (the embeddings themselves included). The
scoring includes DeepPatent's mAP and rank@k and pytorch-metric-learning's precision_at_1 / pml_map /
map_at_r.

    python bench/retrieval_scale.py                        # every case, each in its own process
    python bench/retrieval_scale.py --cases deeppatent     # the DeepPatent test size only
    python bench/retrieval_scale.py --one deeppatent       # one case (used internally)
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

QUERIES, GALLERY, DIM = 13133, 38834, 512
# DeepPatent's test split (GoFigure-LANL/DeepPatent-dataset data/test_query_patent.txt, test_db_patent.txt):
# {(query drawings, DB drawings): patents}, 6,927 patents; 13,133 queries and 38,834 DB drawings in all.
LABEL_COUNTS = {
    (1, 1): 314, (1, 2): 407, (2, 2): 539, (2, 3): 851, (2, 4): 778, (2, 5): 891, (2, 6): 1316, (2, 7): 751,
    (2, 8): 280, (2, 9): 216, (2, 10): 81, (2, 11): 117, (2, 12): 31, (2, 13): 108, (2, 14): 28, (2, 15): 55,
    (2, 16): 15, (2, 17): 29, (2, 18): 6, (2, 19): 13, (2, 20): 22, (2, 21): 11, (2, 22): 4, (2, 23): 13,
    (2, 24): 1, (2, 25): 3, (2, 26): 7, (2, 27): 11, (2, 29): 1, (2, 31): 6, (2, 33): 1, (2, 34): 2, (2, 35): 2,
    (2, 36): 1, (2, 39): 3, (2, 44): 1, (2, 46): 1, (2, 48): 1, (2, 50): 1, (2, 53): 2, (2, 59): 1, (2, 62): 1,
    (2, 69): 1, (2, 71): 1, (2, 77): 1, (2, 79): 1, (2, 107): 1}
CASES = {
    'deeppatent': 'DeepPatent test: 6,927 patents, its label counts',
    'deeppatent_10x': 'gallery x10: each patent 10x its DB drawings',
    'classes': '4 labels, ~9,700 gallery items each',
}


def deeppatent_labels(db_scale: int = 1):
  """Query and gallery labels with DeepPatent's per-patent counts (the DB counts times ``db_scale``)."""
  query, gallery, patent = [], [], 0
  for (n_query, n_db), patents in LABEL_COUNTS.items():
    for _ in range(patents):
      query += [patent] * n_query
      gallery += [patent] * (n_db * db_scale)
      patent += 1
  rng = np.random.default_rng(1)  # rows in no particular order, as embeddings of list files would be
  return rng.permutation(query), rng.permutation(gallery)


def labels_for(case: str):
  if case == 'classes':
    rng = np.random.default_rng(1)
    return rng.integers(0, 4, QUERIES), rng.integers(0, 4, GALLERY)
  return deeppatent_labels(10 if case == 'deeppatent_10x' else 1)


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def run_one(case: str) -> dict:
  from designclip_jax.eval import metrics
  query_labels, gallery_labels = labels_for(case)
  rng = np.random.default_rng(0)
  query = rng.standard_normal((len(query_labels), DIM), dtype=np.float32)
  gallery = rng.standard_normal((len(gallery_labels), DIM), dtype=np.float32)
  start, cpu_start = time.perf_counter(), _cpu_seconds()
  out = metrics.image_retrieval(query, query_labels, gallery, gallery_labels)
  wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
  peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return {'case': case, 'gallery': len(gallery), 'queries': len(query), 'wall_s': wall, 'cpu_s': cpu,
          'peak_rss_mib': peak_mib, 'mAP': out['mAP'], 'rank@1': out['rank@1'],
          'largest_label': int(np.bincount(gallery_labels).max()),
          'inputs_mib': (query.nbytes + gallery.nbytes) / 2 ** 20}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--one', choices=list(CASES))
  parser.add_argument('--cases', nargs='+', choices=list(CASES), default=list(CASES))
  args = parser.parse_args()
  if args.one:
    print(json.dumps(run_one(args.one)))
    return
  rows = []
  for case in args.cases:
    out = subprocess.run([sys.executable, __file__, '--one', case], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    rows.append(json.loads(out))
  print(f'{platform.node()}, {os.cpu_count()} CPUs, {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, '
        f'load average {os.getloadavg()[0]:.1f}; python bench/retrieval_scale.py --cases {" ".join(args.cases)}')
  print('| case | queries | gallery | largest label | wall (s) | CPU (s) | peak RSS (MiB) | embeddings (MiB) | '
        'mAP (random) |')
  print('|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {CASES[r['case']]} | {r['queries']:,} | {r['gallery']:,} | {r['largest_label']:,} | {r['wall_s']:.1f} | "
          f"{r['cpu_s']:.1f} | {r['peak_rss_mib']:.0f} | {r['inputs_mib']:.0f} | {r['mAP']:.5f} |")


if __name__ == '__main__':
  main()
