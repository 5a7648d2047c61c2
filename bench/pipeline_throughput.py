"""Grain training-pipeline throughput on this machine: examples/s and images/s (2 drawings per example)
for worker counts 0 and 2 and model image sizes 64 and 224, and examples per CPU-second (user + system
over the process and its workers: the per-core rate, whatever else the machine runs).

    python bench/pipeline_throughput.py [--data DATA_DIR] [--batches 30]

Without --data it uses (and if needed builds) the embedded synthetic set of configs/synthetic_tiny.py.
"""

import argparse
import time

import psutil

from absl import flags


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data', default='')
  parser.add_argument('--batches', type=int, default=30)
  parser.add_argument('--batch-size', type=int, default=64)
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()  # Grain workers read absl flags

  from designclip_jax.data import pipeline
  from designclip_jax.data.prepare import ensure_dataset
  from designclip_jax.data.tokenizer import Tokenizer
  from designclip_jax.train.config import base_config

  cfg = base_config().data
  cfg.dir = args.data
  cfg.context_length = 48
  data_dir = ensure_dataset(cfg)
  tokenizer = Tokenizer.from_pretrained(pipeline.tokenizer_dir(data_dir), 48)
  rows = []
  for size in (64, 224):
    for workers in (0, 2):
      opts = pipeline.TrainOptions(image_size=size, global_batch=args.batch_size, worker_count=workers)
      it = iter(pipeline.train_dataset(data_dir, opts, tokenizer))
      for _ in range(3):  # warm-up: worker start, first reads
        next(it)
      cpu_start, start = _tree_cpu(), time.perf_counter()
      for _ in range(args.batches):
        next(it)
      elapsed, cpu = time.perf_counter() - start, _tree_cpu() - cpu_start
      examples = args.batches * args.batch_size
      rows.append((size, workers, examples / elapsed, 2 * examples / elapsed, examples / cpu))
      del it
  print(f'data: {data_dir}\n')
  print('| image size | workers | examples/s | images/s | examples per CPU-s |')
  print('|---|---|---|---|---|')
  for size, workers, ex, im, per_cpu in rows:
    print(f'| {size} | {workers} | {ex:.0f} | {im:.0f} | {per_cpu:.0f} |')


def _tree_cpu() -> float:
  """User + system seconds of this process and its live workers."""
  total = 0.0
  for p in [psutil.Process()] + psutil.Process().children(recursive=True):
    try:
      t = p.cpu_times()
      total += t.user + t.system
    except psutil.NoSuchProcess:
      pass
  return total


if __name__ == '__main__':
  main()
