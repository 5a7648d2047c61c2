"""Does the training pipeline keep its rate when its data set sits in a bucket 20-100 ms away? Examples per second of
the Grain training stream (data.pipeline.batched, the train loop's own) read from local disk, from a local GCS
emulator, and from the same emulator behind a proxy that delays every request by a uniform 20-100 ms (GCS's time to
first byte for small reads: ArrayRecord reads one record per ranged GET), for several data.read_threads.

    python bench/gcs_read_rate.py [--data DATA_DIR] [--threads 1 8 32 64] [--batches 6] [--json out.json]

The emulator (tests/gcs_emulator.py: gcp-storage-emulator, serving requests in parallel) runs on this machine and
every client reaches it through its standard variable, so the product's own readers run unchanged. Little's law
bounds a process's rate at threads / mean latency (~60 ms): the table prints that bound beside each measurement.
On a 2-core machine the decode work caps the rate near the local-disk figure; a pod host's Grain workers each run
the same per-process numbers (data.worker_count processes per host).
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time

from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DELAY = (0.02, 0.1)


def upload(local: str, url: str) -> None:
  from etils import epath  # pylint: disable=import-outside-toplevel
  for folder, _, files in os.walk(local):
    for name in files:
      path = os.path.join(folder, name)
      epath.Path(path).copy(epath.Path(url, os.path.relpath(path, local)), overwrite=True)


def rate(data_dir: str, threads: int, batches: int, image_size: int, batch: int) -> float:
  """Examples per second of the training stream after two warm-up batches (workers: 0; the same per process)."""
  from designclip_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from designclip_jax.data.tokenizer import Tokenizer  # pylint: disable=import-outside-toplevel
  opts = pipeline.TrainOptions(image_size=image_size, global_batch=batch, read_threads=threads)
  tokenizer = Tokenizer.from_pretrained(pipeline.tokenizer_dir(data_dir), 77)
  # exactly the batches it reads: nothing left prefetching from a bucket that is about to go
  it = iter(pipeline.train_dataset(data_dir, opts, tokenizer, num_steps=2 + batches))
  for _ in range(2):
    next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * batch / (time.perf_counter() - start)


def main():
  flags.FLAGS.mark_as_parsed()
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--data', help='an ingested data set (default: the synthetic set at 256 px, built once)')
  p.add_argument('--threads', type=int, nargs='+', default=[1, 8, 32, 64])
  p.add_argument('--batches', type=int, default=6)
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--image-size', type=int, default=224)
  p.add_argument('--json')
  args = p.parse_args()
  from designclip_jax.data.prepare import ensure_dataset  # pylint: disable=import-outside-toplevel
  from designclip_jax.train.config import base_config  # pylint: disable=import-outside-toplevel
  from tests.gcs_emulator import DelayProxy, clients_pointed_at, emulator  # pylint: disable=import-outside-toplevel
  data_cfg = base_config().data
  data_cfg.dir, data_cfg.stored_image_size = args.data or '', 256
  data = ensure_dataset(data_cfg)
  rows = []
  measure = lambda where, path, t, **extra: rows.append(dict(
      where=where, read_threads=t, examples_per_s=rate(path, t, args.batches, args.image_size, args.batch),
      load_average=os.getloadavg()[0], **extra))
  for t in args.threads:
    measure('local disk', data, t)
  with emulator(threaded=True) as endpoint:
    with clients_pointed_at(endpoint):
      upload(data, 'gs://bucket/data')
      for t in args.threads:
        measure('emulator', 'gs://bucket/data', t)
    with DelayProxy(endpoint, DELAY) as proxy, clients_pointed_at(proxy.endpoint):
      for t in args.threads:
        before = proxy.requests
        measure(f'emulator + {DELAY[0] * 1e3:.0f}-{DELAY[1] * 1e3:.0f} ms', 'gs://bucket/data', t,
                littles_law_bound=t / (sum(DELAY) / 2))
        rows[-1]['requests'] = proxy.requests - before
  result = dict(command='python bench/gcs_read_rate.py ' + ' '.join(sys.argv[1:]), data=data,
                machine=dict(host=platform.node(), cpus=os.cpu_count(), python=platform.python_version(),
                             date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')),
                image_size=args.image_size, batch=args.batch, batches=args.batches, rows=rows)
  print(f"{result['machine']['date']}, {os.cpu_count()} CPUs; {result['command']}")
  print('| where | data.read_threads | examples/s | bound threads / 60 ms | load |')
  print('|---|---|---|---|---|')
  for r in rows:
    bound = f"{r['littles_law_bound']:.0f}" if 'littles_law_bound' in r else '–'
    print(f"| {r['where']} | {r['read_threads']} | {r['examples_per_s']:.0f} | {bound} | {r['load_average']:.1f} |")
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=1)


if __name__ == '__main__':
  main()
