"""The host's malloc against the training step, the input pipeline and ingestion: glibc vs mimalloc vs
tcmalloc vs jemalloc, each benchmark a subprocess under LD_PRELOAD (both sides of train_throughput.py — ours
and PyTorch eager — in one process, so under the same allocator).

    python bench/allocators.py [--rounds 3] [--allocators glibc mimalloc tcmalloc jemalloc]
                               [--benchmarks train pipeline ingest] [--configs tiny mid] [--patents 1000]
                               [--json FILE]

Allocators are found as scripts/allocator.sh finds them (mimalloc: the cmeel-mimalloc wheel in this
Python's environment; tcmalloc, jemalloc: the OS's packages, e.g. Debian's libtcmalloc-minimal4 and
libjemalloc2); a missing one is left out, saying so. On a shared machine the other load moves every number:
each round runs every allocator once per benchmark, in a rotated order, and the table reports medians over
rounds (the load average is printed with each run). The subprocesses import the package beside this file.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
ALLOCATORS = ('glibc', 'mimalloc', 'tcmalloc', 'jemalloc')
PIPELINE_CASES = ((64, 0), (64, 2), (224, 0), (224, 2))  # (image size, workers) of pipeline_throughput.py


def library(name):
  """The allocator's library file as the launch scripts would preload it; '' for glibc, None if absent."""
  if name == 'glibc':
    return ''
  out = subprocess.run(['bash', '-c', 'source "$0"; allocator_library "$1" "$2"',
                        os.path.join(ROOT, 'scripts', 'allocator.sh'), name, sys.prefix],
                       capture_output=True, text=True)
  return out.stdout.strip() if out.returncode == 0 else None


def environment(lib):
  env = {k: v for k, v in os.environ.items() if k != 'LD_PRELOAD'}
  env['PYTHONPATH'] = ROOT + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
  if lib:
    env['LD_PRELOAD'] = lib
  return env


def check_active(name, env):
  """The child really runs under the allocator (designclip_jax.allocator, what training logs)."""
  out = subprocess.run([sys.executable, '-c', 'from designclip_jax import allocator; print(allocator.describe())'],
                       env=env, capture_output=True, text=True, check=True).stdout.strip()
  if not out.startswith(name + ' '):
    raise SystemExit(f'asked for {name}, the child runs under {out}')
  return out


def run(cmd, env):
  start = time.perf_counter()
  out = subprocess.run([sys.executable] + cmd, env=env, cwd=ROOT, capture_output=True, text=True)
  if out.returncode:
    raise SystemExit(f'{" ".join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}')
  return out.stdout, time.perf_counter() - start


def markdown_rows(text, header_word):
  """Rows of the first markdown table whose header holds ``header_word``, as dicts keyed by header."""
  lines = [l for l in text.splitlines() if l.startswith('|')]
  for i, line in enumerate(lines):
    if header_word in line:
      keys = [c.strip() for c in line.strip('|').split('|')]
      rows = []
      for row in lines[i + 2:]:
        cells = [c.strip() for c in row.strip('|').split('|')]
        if len(cells) != len(keys) or cells[0] == keys[0]:
          break
        rows.append(dict(zip(keys, cells)))
      return rows
  raise ValueError(f'no table with {header_word!r} in:\n{text[-2000:]}')


def train(env, steps, configs, tmp):
  """Per config, ours and torch eager: wall and CPU s/step, minor page faults/step, and our speed over torch's
  (wall and CPU; peak RSS: train_throughput.py --memory-only)."""
  path = os.path.join(tmp, 'train.json')
  run([os.path.join(BENCH, 'train_throughput.py'), '--configs', *configs, '--steps', str(steps),
       '--no-compile', '--no-memory', '--json', path], env)
  with open(path) as f:
    rows = json.load(f)['rows']
  out = {}
  for r in rows:
    side = 'jax' if r['impl'] == 'jax' else 'torch'
    out[f"train {r['config']} {side} s/step"] = r['step_s']
    out[f"train {r['config']} {side} CPU s/step"] = r['cpu_s']
    out[f"train {r['config']} {side} page faults/step"] = r['minor_faults']
    if side == 'jax':
      out[f"train {r['config']} jax/torch speed"] = r['vs_torch_eager']
      out[f"train {r['config']} jax/torch speed (CPU)"] = r['vs_torch_eager_cpu']
  return out


def pipeline(env, data, batches):
  """Examples per CPU-second of the Grain pipeline (process + workers)."""
  text, _ = run([os.path.join(BENCH, 'pipeline_throughput.py'), '--data', data, '--batches', str(batches),
                 '--workers', '0', '2', '--profile-examples', '0'], env)
  out = {}
  for row in markdown_rows(text, 'per CPU'):
    per_cpu = next(v for k, v in row.items() if 'per CPU' in k)
    case = ', '.join(v for k, v in list(row.items())[:2])  # the pipeline's own labels: what it ships, workers
    out[f'pipeline ({case}) ex/CPU-s'] = float(per_cpu.replace(',', ''))
  return out


def ingest(env, patents, root):
  """Rows per CPU-second of the streaming ingest (2 workers) and ms CPU per real IMPACT drawing."""
  text, _ = run([os.path.join(BENCH, 'ingest_scale.py'), '--patents', str(patents), '--root', root], env)
  row = next(r for r in markdown_rows(text, 'rows per CPU') if r['step'] == 'ingest')
  out = {'ingest rows/CPU-s': float(row['rows per CPU-s']), 'ingest peak RSS MiB': float(row['peak RSS (tree) MiB'])}
  real = re.search(r'(\d+) ms CPU per drawing file', text)
  if real:
    out['ingest real IMPACT ms CPU/drawing'] = float(real.group(1))
  return out


def ingested(root, patents):
  """The data set ingest_scale.py wrote last for this size (its folder is named after the input layout)."""
  found = glob.glob(os.path.join(root, f'*data-{patents}'))
  if not found:
    raise SystemExit(f'no data set of {patents} patents under {root}: run the ingest benchmark first')
  return max(found, key=os.path.getmtime)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--allocators', nargs='+', default=list(ALLOCATORS), choices=ALLOCATORS)
  parser.add_argument('--benchmarks', nargs='+', default=['train', 'ingest', 'pipeline'],
                      choices=['train', 'ingest', 'pipeline'], help='run in this order in each round')
  parser.add_argument('--steps', type=int, default=6, help='train_throughput.py --steps')
  parser.add_argument('--configs', nargs='+', default=['tiny', 'mid'], help='train_throughput.py --configs')
  parser.add_argument('--batches', type=int, default=20, help='pipeline_throughput.py --batches')
  parser.add_argument('--patents', type=int, default=1000, help='ingest_scale.py size')
  parser.add_argument('--root', default=os.path.join(tempfile.gettempdir(), 'allocators_bench'))
  parser.add_argument('--json', help='also write every run here (after each)')
  args = parser.parse_args()

  libs = {}
  for name in args.allocators:
    lib = library(name)
    if lib is None:
      print(f'{name}: not installed here, left out')
      continue
    libs[name] = lib
    print(f'{name}: {check_active(name, environment(lib))}')
  print(f'machine: {platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2 ** 30:.0f} GiB; '
        f'{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC\ncommand: python {" ".join(sys.argv)}\n', flush=True)

  if 'pipeline' in args.benchmarks and 'ingest' not in args.benchmarks[:args.benchmarks.index('pipeline')]:
    # the pipeline reads the ingest's output (256 px drawings): written by the code under test
    run([os.path.join(BENCH, 'ingest_scale.py'), '--patents', str(args.patents), '--root', args.root],
        environment(''))
  benchmarks = {'train': lambda env, tmp: train(env, args.steps, args.configs, tmp),
                'pipeline': lambda env, tmp: pipeline(env, ingested(args.root, args.patents), args.batches),
                'ingest': lambda env, tmp: ingest(env, args.patents, args.root)}
  runs = []
  names = list(libs)
  for r in range(args.rounds):
    order = names[r % len(names):] + names[:r % len(names)]  # rotated: no allocator always runs first
    for bench in args.benchmarks:
      for name in order:
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp:
          start = time.perf_counter()
          result = benchmarks[bench](environment(libs[name]), tmp)
        runs.append({'round': r, 'benchmark': bench, 'allocator': name, 'load_before': load,
                     'load_after': os.getloadavg()[0], 'wall_s': time.perf_counter() - start, **result})
        print(f'round {r} {bench:8s} {name:8s} load {load:.1f}->{runs[-1]["load_after"]:.1f} '
              f'{runs[-1]["wall_s"]:.0f} s: ' + ', '.join(f'{k} {v:.3g}' for k, v in result.items()), flush=True)
        if args.json:
          with open(args.json, 'w') as f:
            json.dump({'runs': runs, 'libraries': libs}, f, indent=1)
    report(runs, names, r + 1)  # after every round: a long run can be stopped with a full table


def report(runs, names, rounds):
  """Median of each metric over the rounds, per allocator, and its speed-up over glibc."""
  medians = {}
  for name in names:
    values = {}
    for run_ in (x for x in runs if x['allocator'] == name):
      for k, v in run_.items():
        if k not in ('round', 'benchmark', 'allocator', 'load_before', 'load_after', 'wall_s'):
          values.setdefault(k, []).append(v)
    medians[name] = {k: statistics.median(v) for k, v in values.items()}
  loads = [x['load_before'] for x in runs] + [x['load_after'] for x in runs]
  print(f'\nmedians over {rounds} rounds; load average (1 min) during the runs {min(loads):.1f}–{max(loads):.1f}')
  print('(time: lower is better; rates, speed: higher; × glibc: the speed-up, >1 is better)\n')
  print('| metric | ' + ' | '.join(names) + ' |')
  print('|---|' + '---|' * len(names))
  for key in medians[names[0]]:
    cells = []
    for name in names:
      value = medians[name].get(key, float('nan'))
      cell = f'{value:.3g}'
      if 'glibc' in medians and name != 'glibc' and 'RSS' not in key and 'jax/torch' not in key:
        base = medians['glibc'][key]
        lower_is_better = 's/step' in key or 'ms CPU' in key or 'faults' in key
        ratio = base / value if lower_is_better else value / base if base else float('nan')
        cell += f' ({ratio:.2f}× glibc)' if value else ''  # 0 page faults: no ratio
      cells.append(cell)
    print(f'| {key} | ' + ' | '.join(cells) + ' |', flush=True)

if __name__ == '__main__':
  main()
