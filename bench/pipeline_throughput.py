"""Can one TPU host's CPUs feed its chips? The Grain training pipeline's examples per CPU-second at the model's
image size, drawings shipped as uint8 grey (now) and as float32 RGB (before), with 0, 1, 2 worker processes; where
an example's CPU time goes; and, for every shipped config on its target topology, the cores the pipeline needs per
host at the AOT samples/s bound against the host's vCPUs.

    python bench/pipeline_throughput.py [--data DATA_DIR] [--workers 0 1 2] [--batches 20] [--json out.json]

CPU time is user + system of this process and its live Grain workers (psutil), so the rate is per core whatever
else the machine runs; wall rates are printed beside it but mean little on a shared machine. "Before" is the old
path reproduced here, not an old commit: the same TrainTransform, then its uint8 drawings turned into float32 RGB
inside the workers (data.images.normalize, the arithmetic of the removed images.to_model_input of fa74598), so
they cross processes as before. Both run side by side in one process, alternating, so the machine's load hits both.
(Checked once against fa74598's own pipeline on the same data, 2026-12-03: 231 and 272 examples per CPU-second with
no workers, 182 and 196 with 2, against this script's 218 and 172.)

Without --data it uses (and if needed builds, once) the synthetic set stored at 256 px, as the IMPACT configs ingest
(--image-size 256 in their docstrings).
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time

import numpy as np
import psutil
from absl import flags

# where each shipped config trains (config.hardware) and its AOT samples/s bound: bench/RESULTS.md, "Every config
# on its target" (libtpu 0.0.42.1, 2026-11-29); --aot-report replaces a bound with a newer aot --output JSON
AOT_BOUNDS = {('impact_vitb16', 'v4:2x2x4'): 19_010, ('impact_rn50', 'v4:2x2x4'): 48_480,
              ('impact_vitl14', 'v4:2x4x4'): 7_013, ('impact_vitb16', 'v5e:4x4'): 13_605}
# TPU VM hosts: chips and vCPUs per host
_V4_CHIPS = ('4 chips per VM, v4-32 (2x2x4) on 4 VMs, v4-64 (2x4x4) on 8: the GKE TPU-type table of Google Cloud\'s '
             'applied-ai-engineering-samples (ai-infrastructure/saxml-on-gke/README.md)')
_V5E = 'docs.cloud.google.com/tpu/docs/v5e, VM types (ct5lp-hightpu-1t 24, -4t 112, -8t 224 vCPUs)'
HOSTS = {
    'v4': [dict(machine='ct4p-hightpu-4t', chips=4, vcpus=240,
                source=f'{_V4_CHIPS}; 240 vCPUs as the project brief gives it: not found in the Google Cloud '
                       'documentation searchable from here (docs.cloud.google.com/tpu/docs/v4 names no vCPU count)')],
    'v5e': [dict(machine='ct5lp-hightpu-4t', chips=4, vcpus=112, source=_V5E),
            dict(machine='ct5lp-hightpu-8t', chips=8, vcpus=224, source=_V5E)],
    'v5p': [dict(machine='v5p host', chips=4, vcpus=208,
                 source='docs.cloud.google.com/tpu/docs/v5p-training, VM, host and slice properties (4 chips, 208 '
                        'vCPUs; half of them with NUMA binding)')],
}


class FloatRGB:
  """The old path: the transform's example with its drawings as float32 RGB, made in the worker."""

  def __init__(self, transform, normalization):
    self.transform, self.normalization = transform, normalization

  def __call__(self, index):
    from designclip_jax.data.images import normalize  # pylint: disable=import-outside-toplevel
    example = self.transform(index)
    return {**example, 'image': normalize(example['image'], self.normalization),
            'view': normalize(example['view'], self.normalization)}


def tree_cpu() -> float:
  """User + system seconds of this process and its live children (Grain workers)."""
  total = 0.0
  for p in [psutil.Process()] + psutil.Process().children(recursive=True):
    try:
      t = p.cpu_times()
      total += t.user + t.system
    except psutil.NoSuchProcess:
      pass
  return total


def measure(transform, opts, batches: int) -> dict:
  from designclip_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  it = iter(pipeline.batched(transform, opts))
  for _ in range(3):  # warm-up: worker start, first reads
    batch = next(it)
  cpu0, wall0 = tree_cpu(), time.perf_counter()
  for _ in range(batches):
    next(it)
  cpu, wall = tree_cpu() - cpu0, time.perf_counter() - wall0
  it.close()
  examples = batches * opts.global_batch
  return {'examples_per_cpu_second': examples / cpu, 'examples_per_second': examples / wall,
          'bytes_per_example': sum(v.nbytes for v in batch.values()) / opts.global_batch,
          'image_dtype': str(batch['image'].dtype), 'image_shape': list(batch['image'].shape[1:])}


def stage_costs(transform, examples: int) -> dict:
  """CPU milliseconds per example of each stage of TrainTransform, each stage timed on its own (process CPU clock,
  no profiler: cProfile found these stages but slowed the Python-heavy ones 3x) over the same drawn records, and
  the whole transform over the same examples for comparison."""
  from designclip_jax.data import images as image_ops  # pylint: disable=import-outside-toplevel
  from designclip_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  size, cost = transform.opts.image_size, {}

  def timed(stage, fn):
    start = time.process_time()
    out = fn()
    cost[stage] = 1e3 * (time.process_time() - start) / examples
    return out

  for k in range(10 ** 6, 10 ** 6 + 64):  # warm-up: the shards' first reads, the tokenizer's first call
    transform(k)
  rngs = timed("the example's own RNG (SeedSequence + PCG64)",
               lambda: [np.random.default_rng([transform.opts.seed, k]) for k in range(examples)])
  drawn = timed('draw a record (class-aware sampler)', lambda: [pipeline.draw_record(transform.cdf, r) for r in rngs])
  records = timed('read the record (ArrayRecord + TFDS parse of all its views)',
                  lambda: [transform.source[i] for i in drawn])
  pngs = [png for r in records for png in (r['images'][0], r['images'][min(1, len(r['images']) - 1)])]
  grays = timed('decode 2 PNGs', lambda: [image_ops.decode_png(png) for png in pngs])
  rng = np.random.default_rng(0)
  augment = pipeline._augment  # pylint: disable=protected-access
  timed('augment 2 drawings: crop + resize (PIL BOX)', lambda: [augment(g, size, rng) for g in grays])
  captions = [r['caption'].decode() for r in records]
  timed('tokenise the caption', lambda: [transform.tokenizer([c]) for c in captions])
  timed('the whole transform', lambda: [transform(k) for k in range(examples)])
  # the rest: the view pair, the caption's decoding, the example's dict
  cost['rest of the transform'] = 2 * cost['the whole transform'] - sum(cost.values())
  return cost


def load_config(name: str):
  import importlib.util  # pylint: disable=import-outside-toplevel
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs', f'{name}.py')
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def host_rows(rate: float, aot_bounds: dict) -> list:
  """Per shipped config on its target (and the other topologies of bench/RESULTS.md): samples/s per host at the
  AOT bound, the cores the pipeline needs for it at ``rate`` examples per CPU-second, the host's vCPUs."""
  from designclip_jax.aot.topology import chip_of  # pylint: disable=import-outside-toplevel
  rows = []
  for (name, topology), bound in aot_bounds.items():
    config = load_config(name)
    chips = int(np.prod([int(d) for d in topology.split(':')[1].split('x')]))
    generation = topology.split(':')[0]
    for host in HOSTS[generation]:
      per_host = bound * host['chips'] / chips
      cores = per_host / rate
      rows.append({'config': name, 'topology': topology, 'target': topology == config.hardware,
                   'chip': chip_of(topology).name, 'chips': chips, 'machine': host['machine'],
                   'chips_per_host': host['chips'], 'hosts': chips // host['chips'], 'aot_samples_per_s': bound,
                   'samples_per_s_per_host': per_host, 'cores_needed': cores, 'host_vcpus': host['vcpus'],
                   'headroom': host['vcpus'] / cores, 'data_worker_count': config.data.worker_count,
                   # a worker process is about one core: what the config's workers give over what the chips take
                   'worker_headroom': config.data.worker_count / cores,
                   'host_source': host['source']})
  return rows


def machine() -> dict:
  model = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')),
               platform.processor())
  return {'host': platform.node(), 'cpu': model, 'cpus': os.cpu_count(), 'python': platform.python_version(),
          'load_average_1min': os.getloadavg()[0],
          'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data', default='', help='an ingested data set (default: the synthetic set at 256 px)')
  parser.add_argument('--image-size', type=int, default=224)
  parser.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--batches', type=int, default=20)
  parser.add_argument('--batch-size', type=int, default=64)
  parser.add_argument('--rounds', type=int, default=1, help='repeat before/after pairs; the median is reported')
  parser.add_argument('--stage-examples', type=int, default=300, help='examples the stage timings run over (0: none)')
  parser.add_argument('--aot-report', nargs='*', default=[],
                      help='python -m designclip_jax.aot --output JSONs whose samples/s bounds replace the table')
  parser.add_argument('--json', default='', help='also write every number here')
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()  # Grain workers read absl flags

  from designclip_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from designclip_jax.data.prepare import ensure_dataset  # pylint: disable=import-outside-toplevel
  from designclip_jax.data.tokenizer import Tokenizer  # pylint: disable=import-outside-toplevel
  from designclip_jax.train.config import base_config  # pylint: disable=import-outside-toplevel

  data_cfg = base_config().data
  data_cfg.dir, data_cfg.stored_image_size = args.data, 256
  data_dir = ensure_dataset(data_cfg)
  tokenizer = Tokenizer.from_pretrained(pipeline.tokenizer_dir(data_dir), 77)
  started = machine()

  rates = []
  for workers in args.workers:
    opts = pipeline.TrainOptions(image_size=args.image_size, global_batch=args.batch_size, worker_count=workers)
    transform = pipeline.TrainTransform(data_dir, opts, tokenizer)
    paths = {'float32 RGB (before)': FloatRGB(transform, 'clip'), 'uint8 grey (now)': transform}
    runs = {name: [] for name in paths}
    for _ in range(args.rounds):
      for name, fn in paths.items():
        runs[name].append(measure(fn, opts, args.batches))
    for name, got in runs.items():
      median = lambda key: float(np.median([g[key] for g in got]))
      rates.append({'path': name, 'workers': workers, 'examples_per_cpu_second': median('examples_per_cpu_second'),
                    'examples_per_second': median('examples_per_second'), **{k: got[0][k] for k in (
                        'bytes_per_example', 'image_dtype', 'image_shape')}})

  stages = {}
  if args.stage_examples:
    opts = pipeline.TrainOptions(image_size=args.image_size, global_batch=args.batch_size)
    stages = stage_costs(pipeline.TrainTransform(data_dir, opts, tokenizer), args.stage_examples)

  bounds = dict(AOT_BOUNDS)
  for path in args.aot_report:
    with open(path) as f:
      report = json.load(f)
    name = os.path.splitext(report['config_name'])[0]
    bounds[(name, report['topology'])] = report['roofline']['samples_per_second']
  now = [r for r in rates if r['path'].startswith('uint8')]
  feeding = max(now, key=lambda r: r['workers'])  # the configs run Grain workers (data.worker_count = 8)
  hosts = host_rows(feeding['examples_per_cpu_second'], bounds)

  result = {'command': ' '.join([os.path.basename(sys.executable)] + sys.argv), 'machine': started,
            'load_average_1min_end': os.getloadavg()[0], 'data': data_dir, 'image_size': args.image_size,
            'batch_size': args.batch_size, 'batches': args.batches, 'rounds': args.rounds, 'rates': rates,
            'stage_examples': args.stage_examples, 'stage_ms_per_example': stages,
            'host_rate': {'workers': feeding['workers'], 'examples_per_cpu_second': feeding['examples_per_cpu_second']},
            'hosts': hosts}
  print_tables(result)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=1)


def print_tables(r: dict) -> None:
  m = r['machine']
  print(f"machine: {m['host']} ({m['cpus']} CPUs, {m['cpu']}), {m['date']}, load average {m['load_average_1min']:.1f}"
        f" -> {r['load_average_1min_end']:.1f}; command: {r['command']}\ndata: {r['data']}\n")
  print(f"Training pipeline at {r['image_size']} px, batches of {r['batch_size']}, {r['batches']} batches after 3 "
        'warm-up (median of {} rounds)\n'.format(r['rounds']))
  print('| drawings shipped as | workers | bytes per example | examples per CPU-second | examples/s (wall) |')
  print('|---|---|---|---|---|')
  for x in r['rates']:
    print(f"| {x['path']} | {x['workers']} | {x['bytes_per_example']:,.0f} | {x['examples_per_cpu_second']:,.0f} | "
          f"{x['examples_per_second']:,.0f} |")
  if r['stage_ms_per_example']:
    stages = r['stage_ms_per_example']
    whole = stages['the whole transform']
    print(f"\nWhere an example's CPU time goes: each stage timed on its own over the same {r['stage_examples']} "
          'examples, one process, no workers\n')
    print('| stage | CPU ms per example | share of the whole transform |')
    print('|---|---|---|')
    for stage, ms in stages.items():
      print(f'| {stage} | {ms:.3f} | {100 * ms / whole:.0f}% |')
  h = r['host_rate']
  print(f"\nFeeding the chips: cores the pipeline needs per TPU host at the AOT samples/s bound, at "
        f"{h['examples_per_cpu_second']:,.0f} examples per CPU-second (uint8, {h['workers']} workers, this machine)\n")
  print('| config | topology | host | hosts | AOT samples/s ≤ | per host | cores needed | host vCPUs | headroom | '
        'data.worker_count | workers / cores needed |')
  print('|---|---|---|---|---|---|---|---|---|---|---|')
  for x in r['hosts']:
    where = x['topology'] + (' (target)' if x['target'] else '')
    print(f"| {x['config']} | {where} | {x['machine']} ({x['chips_per_host']} chips) | {x['hosts']} | "
          f"{x['aot_samples_per_s']:,.0f} | {x['samples_per_s_per_host']:,.0f} | {x['cores_needed']:.1f} | "
          f"{x['host_vcpus']} | {x['headroom']:.1f}x | {x['data_worker_count']} | {x['worker_headroom']:.1f}x |")
  print('\nhost sources: ' + '; '.join(sorted({f"{x['machine']}: {x['host_source']}" for x in r['hosts']})))


if __name__ == '__main__':
  main()
