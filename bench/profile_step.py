"""Where does a train step's time go? Traces a few steps of the real jitted step (tiny config, L_CACL)
with jax.profiler and prints device time per XLA op kind.

    python bench/profile_step.py [--config tiny] [--steps 3]
"""

import argparse
import collections
import glob
import gzip
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import train_throughput  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default='tiny', choices=list(common.CONFIGS))
  parser.add_argument('--steps', type=int, default=3)
  args = parser.parse_args()
  import jax
  cfg, n = common.CONFIGS[args.config]
  run, _ = train_throughput.jax_step(cfg, n)
  run(), run()
  folder = tempfile.mkdtemp(prefix='jaxprof-')
  jax.profiler.start_trace(folder, create_perfetto_trace=True)
  for _ in range(args.steps):
    run()
  jax.profiler.stop_trace()
  trace = json.load(gzip.open(sorted(glob.glob(f'{folder}/**/*.json.gz', recursive=True))[-1]))
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  time_by_kind, count_by_kind = collections.Counter(), collections.Counter()
  for e in events:
    name = e.get('name', '')
    if e.get('ph') == 'X' and 'dur' in e and ('fusion' in name or name in ('dot', 'convolution', 'sort')):
      kind = name.split('.')[0]
      time_by_kind[kind] += e['dur']
      count_by_kind[kind] += 1
  total = sum(time_by_kind.values())
  print('| op kind | ms / step | share | ops / step |\n|---|---|---|---|')
  for kind, us in time_by_kind.most_common(12):
    print(f'| {kind} | {us / 1e3 / args.steps:.1f} | {us / total:.0%} | {count_by_kind[kind] // args.steps} |')


if __name__ == '__main__':
  main()
