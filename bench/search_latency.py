"""Prior-art search latency and peak memory against index size: the chunked top-k of
designclip_jax.search (JAX, every local device) against a plain NumPy matmul + argpartition, on random
unit vectors (D = 512, stored float16 as the index stores them), k = 100 rows per query.

    python bench/search_latency.py                    # 100k and 1M rows, both methods, 1 and 16 queries
    python bench/search_latency.py --sizes 100000     # one size
    python bench/search_latency.py --one jax 100000   # one measurement in this process (used internally)
    python bench/search_latency.py --tpu-compile v5e:2x2  # compile the 1M-row search for a TPU slice, no TPU
                                                         # needed (libtpu: the [aot] extra); per-chip memory

Each (method, size) runs in its own process. 'resident' is the process's resident memory once the
index is in place (JAX's index lives in host memory on a CPU); the peak is then reset
(/proc/self/clear_refs) after one warm-up query per shape (compilation), and 'query peak' is how far
above that the timed queries went (scores, top-k).
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

DIM, K, REPEATS = 512, 100, 10


def _status_mib(field: str) -> float:
  with open('/proc/self/status') as f:
    return next(int(line.split()[1]) for line in f if line.startswith(field + ':')) / 1024


def _reset_peak() -> None:
  with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')  # resets VmHWM to the current resident size


def _vectors(n: int) -> np.ndarray:
  """n random unit vectors in float16, made in blocks (no float32 copy of the whole index)."""
  rng = np.random.default_rng(0)
  out = np.empty((n, DIM), np.float16)
  for start in range(0, n, 65536):
    x = rng.standard_normal((min(65536, n - start), DIM), dtype=np.float32)
    out[start:start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
  return out


def _timed(fn, queries):
  times = []
  for _ in range(REPEATS):
    start = time.perf_counter()
    fn(queries)
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def run_one(method: str, n: int) -> dict:
  vectors = _vectors(n)
  rng = np.random.default_rng(1)
  queries = {q: rng.standard_normal((q, DIM), dtype=np.float32) for q in (1, 16)}
  if method == 'jax':
    import jax  # pylint: disable=import-outside-toplevel
    from designclip_jax.search.topk import DeviceIndex, Rows  # pylint: disable=import-outside-toplevel
    index = DeviceIndex(vectors, Rows.plain(np.zeros(n, np.int32)))
    del vectors
    fn = lambda q: index.top_k(q, K)[1]
    backend = f'{jax.default_backend()} x{len(jax.local_devices())}, chunk {index.chunk}, {index.method}'
  else:
    matrix = vectors.astype(np.float32)  # NumPy's float16 matmul is not BLAS: upcast once, as a user would
    del vectors

    def fn(q):
      scores = q @ matrix.T  # the full (queries x index) matrix
      part = np.argpartition(-scores, K, axis=1)[:, :K]
      return np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, 1), axis=1), 1)
    backend = 'numpy float32 matmul + argpartition'
  for x in queries.values():
    fn(x)  # compile and warm up outside the measurement
  resident = _status_mib('VmRSS')
  _reset_peak()
  result = {'method': method, 'rows': n, 'backend': backend}
  for q, x in queries.items():
    result[f'ms_{q}'] = 1000 * _timed(fn, x)
    result[f'ids_{q}'] = np.asarray(fn(x))[:, :10].tolist()
  result.update(resident_mib=resident, query_peak_mib=_status_mib('VmHWM') - resident)
  return result


def tpu_compile(topology: str, n: int = 1_000_000, queries: int = 16) -> None:
  """Ahead-of-time compile of the sharded search (approx_max_k and exact top_k) for a TPU topology."""
  from designclip_jax import sharding  # pylint: disable=import-outside-toplevel
  from designclip_jax.aot.topology import topology_devices  # pylint: disable=import-outside-toplevel
  from designclip_jax.search import topk  # pylint: disable=import-outside-toplevel
  devices = topology_devices(topology)
  mesh = sharding.make_mesh(-1, 1, devices=devices)
  print(f'{topology} ({len(devices)} chips), {n:,} rows float16, {queries} queries, top {K}; per chip:')
  print('| method | arguments (MiB) | temporaries (MiB) | top-k op in the HLO |')
  print('|---|---|---|---|')
  for method in ('approx', 'exact'):
    compiled = topk.compile_for(mesh, n, DIM, k=K, queries=queries, method=method)
    m, hlo = compiled.memory_analysis(), compiled.as_text()
    op = ('PartialReduce (TPU approx top-k)' if '"PartialReduce"' in hlo else
          'TopK' if 'TopK' in hlo else 'sort')
    print(f'| {method} | {m.argument_size_in_bytes / 2**20:.1f} | {m.temp_size_in_bytes / 2**20:.1f} | {op} |')


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--sizes', type=int, nargs='+', default=[100_000, 1_000_000])
  parser.add_argument('--one', nargs=2, metavar=('METHOD', 'ROWS'))
  parser.add_argument('--tpu-compile', metavar='TOPOLOGY')
  args = parser.parse_args()
  if args.tpu_compile:
    tpu_compile(args.tpu_compile)
    return
  if args.one:
    print(json.dumps(run_one(args.one[0], int(args.one[1]))))
    return
  rows = []
  for n in args.sizes:
    for method in ('jax', 'numpy'):
      out = subprocess.run([sys.executable, __file__, '--one', method, str(n)], capture_output=True, text=True,
                           check=True).stdout.strip().splitlines()[-1]
      rows.append(json.loads(out))
  print(f'machine: {platform.node()} ({os.cpu_count()} CPUs), {datetime.date.today()}, '
        f'command: python bench/search_latency.py {" ".join(sys.argv[1:])}'.rstrip())
  print(f'D = {DIM}, float16 index, top {K} rows per query, median of {REPEATS}')
  print('| rows | method | 1 query (ms) | 16 queries (ms) | resident (MiB) | query peak (MiB) | same top 10 as NumPy |')
  print('|---|---|---|---|---|---|---|')
  for r in rows:
    ref = next(x for x in rows if x['rows'] == r['rows'] and x['method'] == 'numpy')
    same = r['ids_1'] == ref['ids_1'] and r['ids_16'] == ref['ids_16']
    print(f"| {r['rows']:,} | {r['method']} ({r['backend']}) | {r['ms_1']:.1f} | {r['ms_16']:.1f} | "
          f"{r['resident_mib']:.0f} | {r['query_peak_mib']:.0f} | {'yes' if same else 'no'} |")


if __name__ == '__main__':
  main()
