"""Data path at scale on this machine: synthetic generation and streaming ingestion (wall time, CPU
time, rows per CPU-second, peak RSS of the whole process tree, workers included) at several sizes,
then the train pipeline's time to its first batch with the record index (what TrainTransform does)
against reading every record's label (what it did before the index).

    python bench/ingest_scale.py --patents 2000 8000 32000 [--workers 2] [--root /tmp/ingest_scale]
    python bench/ingest_scale.py --layout redbook --patents 500 2000   # weekly tars, ingest --redbook --csv

Each size is generated once under --root and kept (delete it to re-measure generation). Rows print
as they finish, so a long run can be stopped after any size. CPU time (user + system over the tree)
is what the extrapolation to IMPACT uses: wall time on a shared machine depends on the other load.
"""

import argparse
import datetime
import os
import platform
import resource
import subprocess
import sys
import threading
import time

import numpy as np
import psutil

REAL_SAMPLE = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'impact-sample')

FIRST_BATCH = '''
import sys, time
from absl import flags
flags.FLAGS.mark_as_parsed()
from designclip_jax.data import pipeline
from designclip_jax.data.tokenizer import Tokenizer
data = sys.argv[1]
start = time.perf_counter()
source = pipeline.open_split(data, 'train')
labels = [int(source[i]['label']) for i in range(len(source))]  # the start-up before the record index
reading = time.perf_counter() - start
start = time.perf_counter()
opts = pipeline.TrainOptions(image_size=224, global_batch=64, worker_count=0)
tokenizer = Tokenizer.from_pretrained(pipeline.tokenizer_dir(data), 32)
pipeline.TrainTransform(data, opts, tokenizer)
transform = time.perf_counter() - start
next(iter(pipeline.train_dataset(data, opts, tokenizer)))
print(reading, transform, time.perf_counter() - start)
'''


def run_measured(cmd):
  """Run ``cmd``; return (wall s, CPU s of the tree, peak summed RSS bytes of the tree, stdout). CPU is
  the rusage of waited-for children, which includes their own reaped workers."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  root = psutil.Process(proc.pid)
  peak = [0]
  done = threading.Event()

  def sample():
    while not done.is_set():
      try:
        tree = [root] + root.children(recursive=True)
      except psutil.NoSuchProcess:
        break
      rss = 0
      for p in tree:
        try:
          rss += p.memory_info().rss
        except psutil.NoSuchProcess:
          pass
      peak[0] = max(peak[0], rss)
      time.sleep(0.1)

  start = time.perf_counter()
  thread = threading.Thread(target=sample, daemon=True)
  thread.start()
  out, _ = proc.communicate()
  wall = time.perf_counter() - start
  done.set()
  thread.join()
  if proc.returncode:
    raise SystemExit(f'{" ".join(cmd)} failed with exit code {proc.returncode}')
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
  return wall, cpu, peak[0], out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--patents', type=int, nargs='+', default=[2000, 8000, 32000])
  parser.add_argument('--workers', type=int, default=2)
  parser.add_argument('--root', default='/tmp/ingest_scale')
  parser.add_argument('--image-size', type=int, default=256)
  parser.add_argument('--layout', choices=('impact', 'redbook'), default='impact',
                      help='the synthetic set as IMPACT (CSV + sheets) or as Red Book weekly tars (+ the same CSV)')
  args = parser.parse_args()
  print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
        f'{psutil.virtual_memory().total / 2 ** 30:.0f} GiB; {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC')
  print(f'command: python {" ".join(sys.argv)}\n')
  print('| patents | step | drawings | wall s | CPU s | rows per CPU-s | peak RSS (tree) MiB | data set MiB |')
  print('|---|---|---|---|---|---|---|---|')
  py = sys.executable
  for n in args.patents:
    raw, out = os.path.join(args.root, f'{args.layout}-raw-{n}'), os.path.join(args.root, f'{args.layout}-data-{n}')
    csv_path = os.path.join(raw, 'synthetic.csv')
    if not os.path.exists(csv_path):
      wall, cpu, peak, _ = run_measured([py, '-m', 'designclip_jax.data.synthetic', '--out', raw, '--patents', str(n),
                                         '--workers', str(args.workers), '--layout', args.layout])
      print(f'| {n} | generate | – | {wall:.0f} | {cpu:.0f} | {n / cpu:.1f} | {peak / 2 ** 20:.0f} | – |', flush=True)
    source = ['--csv', csv_path, '--images', raw] if args.layout == 'impact' else ['--redbook', raw, '--csv', csv_path]
    wall, cpu, peak, _ = run_measured([py, '-m', 'designclip_jax.data.ingest', *source,
                                       '--out', out, '--workers', str(args.workers), '--overwrite',
                                       '--image-size', str(args.image_size), '--tokenizer-vocab', '2048',
                                       '--context-length', '32'])
    drawings = _stored_drawings(out)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(os.path.join(out, 'designclip_patents'))
               for f in files)
    print(f'| {n} | ingest | {drawings} | {wall:.0f} | {cpu:.0f} | {n / cpu:.1f} | {peak / 2 ** 20:.0f} | '
          f'{size / 2 ** 20:.0f} |', flush=True)
  print('\n| patents | labels read from every record (old start-up) s | TrainTransform from the record index s '
        '| first 64 x 224 px batch s |')
  print('|---|---|---|---|')
  for n in args.patents:
    reading, transform, first = map(float, run_measured(
        [py, '-c', FIRST_BATCH, os.path.join(args.root, f'{args.layout}-data-{n}')])[3].split())
    print(f'| {n} | {reading:.2f} | {transform:.2f} | {first:.2f} |', flush=True)
  if os.path.isfile(os.path.join(REAL_SAMPLE, 'sample_data.csv')):
    drawings = sum(1 for _, _, files in os.walk(REAL_SAMPLE) for f in files if f.upper().endswith('.TIF'))
    source = (['--csv', os.path.join(REAL_SAMPLE, 'sample_data.csv'), '--images', REAL_SAMPLE] if args.layout == 'impact'
              else ['--redbook', REAL_SAMPLE, '--csv', os.path.join(REAL_SAMPLE, 'sample_data.csv')])
    out = os.path.join(args.root, f'{args.layout}-data-impact-sample')
    wall, cpu, peak, _ = run_measured([py, '-m', 'designclip_jax.data.ingest', *source, '--out', out, '--workers', '1',
                                       '--overwrite', '--image-size', str(args.image_size)])
    print(f'\nreal IMPACT sample ({args.layout} layout, 35 patents, {drawings} TIFF files, 1 worker): {wall:.1f} s wall, '
          f'{cpu:.1f} CPU s, {1000 * cpu / drawings:.0f} ms CPU per drawing file, peak RSS {peak / 2 ** 20:.0f} MiB')


def _stored_drawings(out: str) -> int:
  """Drawings in the ingested data set (from its record index)."""
  total = 0
  for name in os.listdir(out):
    if name.startswith('record_index-'):
      with np.load(os.path.join(out, name)) as z:
        total += len(z['views'])
  return total


if __name__ == '__main__':
  main()
