"""Image-retrieval scoring at the DeepPatent test size (13,133 queries x 38,834 gallery, D=512, random
embeddings, 6,927 patents) and at 10x the gallery: wall time, process CPU time (user + system: less
sensitive than wall time to other jobs on a shared machine) and peak resident memory. The scoring
includes DeepPatent's mAP and rank@k and pytorch-metric-learning's precision_at_1 / pml_map / map_at_r.

    python bench/retrieval_scale.py                # both sizes, each in its own process
    python bench/retrieval_scale.py --scales 1     # the DeepPatent test size only
    python bench/retrieval_scale.py --one 10       # one size (used internally)
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

QUERIES, GALLERY, PATENTS, DIM = 13133, 38834, 6927, 512


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def run_one(scale: int) -> dict:
  from designclip_jax.eval import metrics
  rng = np.random.default_rng(0)
  gallery_n = GALLERY * scale
  patents = PATENTS * scale
  query = rng.standard_normal((QUERIES, DIM), dtype=np.float32)
  gallery = rng.standard_normal((gallery_n, DIM), dtype=np.float32)
  query_labels = rng.integers(0, PATENTS, QUERIES)
  gallery_labels = rng.integers(0, patents, gallery_n)
  start, cpu_start = time.perf_counter(), _cpu_seconds()
  out = metrics.image_retrieval(query, query_labels, gallery, gallery_labels)
  wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
  peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return {'gallery': gallery_n, 'queries': QUERIES, 'wall_s': wall, 'cpu_s': cpu, 'peak_rss_mib': peak_mib,
          'mAP': out['mAP'], 'num_queries': out['num_queries'],
          'inputs_mib': (query.nbytes + gallery.nbytes) / 2 ** 20}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--one', type=int)
  parser.add_argument('--scales', type=int, nargs='+', default=[1, 10])
  args = parser.parse_args()
  if args.one:
    print(json.dumps(run_one(args.one)))
    return
  rows = []
  for scale in args.scales:
    out = subprocess.run([sys.executable, __file__, '--one', str(scale)], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    rows.append(json.loads(out))
  print(f'{platform.node()}, {os.cpu_count()} CPUs, {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, '
        f'load average {os.getloadavg()[0]:.1f}; python bench/retrieval_scale.py --scales {" ".join(map(str, args.scales))}')
  print('| queries | gallery | wall (s) | CPU (s) | peak RSS (MiB) | embeddings (MiB) | mAP (random) |')
  print('|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['queries']:,} | {r['gallery']:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mib']:.0f} | "
          f"{r['inputs_mib']:.0f} | {r['mAP']:.5f} |")


if __name__ == '__main__':
  main()
