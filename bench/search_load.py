"""Load test of the search server: N concurrent clients on loopback for a bounded time, against indexes of
10k and 1M rows; per size, p50 / p99 latency, requests per second, errors and the server's resident memory.

    python bench/search_load.py                          # 10k and 1M rows, 8 clients, 30 s each
    python bench/search_load.py --rows 10000 --clients 4 --seconds 10

The index rows are synthetic random unit vectors (D = 512, float16, as ViT-B's embeddings are stored; four
drawings per patent): the search cost depends on the rows' number and width, not their values. The model is
a tiny random CLIP with a 512-wide projection, so encoding a query costs little next to ViT-B's: the
latency is the server's (upload parsing, preprocessing, tiny towers, top-k over the index, grouping).
Each client sends, in turn, a drawing (a synthetic patent sheet, TIFF) and words, to /api/search with
top 20, after one query of each kind has compiled the towers and the top-k (timed apart). The server runs as
``python -m designclip_jax.search serve`` in its own process; its resident memory (VmRSS) is sampled every
0.2 s: once warm, and the peak under load.
"""

import argparse
import datetime
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

DIM, DRAWINGS_PER_PATENT, SHARD_ROWS, TOP = 512, 4, 65536, 20


def build_model(folder: str) -> str:
  """A tiny random CLIP (HF directory, with a small BPE tokenizer) whose embeddings are DIM wide."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from designclip_jax import save_pretrained  # pylint: disable=import-outside-toplevel
  from designclip_jax.data.tokenizer import train_bpe  # pylint: disable=import-outside-toplevel
  from designclip_jax.models import CLIP, preset  # pylint: disable=import-outside-toplevel
  if os.path.isfile(os.path.join(folder, 'config.json')):
    return folder
  tokenizer = train_bpe(['a line drawing of a chair with curved legs', 'a kettle', 'a lamp on a stand'] * 20,
                        300, 32)
  config = preset('tiny').replace(vision_image_size=64, vision_patch_size=16, vision_layers=1, vision_width=64,
                                  vision_heads=2, vision_mlp_dim=128, text_layers=1, text_width=64, text_heads=2,
                                  text_mlp_dim=128, text_context_length=32, text_vocab_size=tokenizer.vocab_size,
                                  text_eos_token_id=tokenizer.eos_token_id, embed_dim=DIM)
  save_pretrained(CLIP(config, rngs=nnx.Rngs(0)), folder, tokenizer=tokenizer)
  return folder


def build_index(out: str, rows: int, model: str) -> str:
  """An index of ``rows`` random unit vectors over one (empty) folder source, written shard by shard."""
  from designclip_jax.search import index as index_lib  # pylint: disable=import-outside-toplevel
  from designclip_jax.weights.loader import load_model  # pylint: disable=import-outside-toplevel
  if os.path.isfile(os.path.join(out, index_lib.INDEX_FILE)):
    return out
  clip, tokenizer, normalization = load_model(model)
  os.makedirs(os.path.join(out, 'drawings'), exist_ok=True)
  manifest = index_lib.Manifest(dtype='float16', model=index_lib.model_identity(model, clip, tokenizer, normalization),
                                records_per_shard=256)
  manifest.datasets.append({'kind': 'folder', 'data_dir': os.path.join(out, 'drawings'), 'splits': ['all'],
                            'sheet_size': clip.config.vision.image_size})
  rng = np.random.default_rng(0)
  for start in range(0, rows, SHARD_ROWS):
    n = min(SHARD_ROWS, rows - start)
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    number = np.arange(start, start + n)
    patents = [f'P{i // DRAWINGS_PER_PATENT:07d}' for i in number]
    meta = {'kind': ['drawing'] * n, 'patent_id': patents, 'title': [''] * n, 'class': [''] * n, 'view': [''] * n,
            'dataset': [0] * n, 'split': ['all'] * n, 'record': number.tolist(), 'image': [0] * n,
            'path': [f'{p}/{i % DRAWINGS_PER_PATENT}.png' for p, i in zip(patents, number)]}
    name = f'shard-{len(manifest.shards):05d}'
    index_lib.write_shard(out, name, (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16), meta)
    manifest.shards.append({'name': name, 'dataset': 0, 'split': 'all', 'start': start, 'rows': n, 'skipped': 0})
  manifest.save(out)
  return out


def _query_drawing() -> bytes:
  from designclip_jax.data import synthetic  # pylint: disable=import-outside-toplevel
  _, files = synthetic.make_patent(0, 5, seed=1)
  return list(files.values())[1]


def _multipart(fields: dict, files: list) -> tuple[bytes, str]:
  boundary = uuid.uuid4().hex
  body = b''.join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                  for k, v in fields.items())
  body += b''.join(f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\n'
                   'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b'\r\n' for name, data in files)
  return body + f'--{boundary}--\r\n'.encode(), f'multipart/form-data; boundary={boundary}'


def _rss_mib(pid: int) -> float:
  with open(f'/proc/{pid}/status') as f:
    return next(int(line.split()[1]) for line in f if line.startswith('VmRSS:')) / 1024


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def run_load(index: str, model: str, clients: int, seconds: float) -> dict:
  port = _free_port()
  url = f'http://127.0.0.1:{port}/'
  server = subprocess.Popen([sys.executable, '-m', 'designclip_jax.search', 'serve', '--index', index, '--checkpoint',
                             model, '--port', str(port)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
  try:
    started = time.perf_counter()
    while True:
      if server.poll() is not None:
        raise RuntimeError(f'the server exited: {server.stderr.read()[-2000:]}')
      try:
        urllib.request.urlopen(url, timeout=5).read()
        break
      except (urllib.error.URLError, ConnectionError):
        time.sleep(0.5)
    load_s = time.perf_counter() - started
    requests = [_multipart({'top': TOP}, [('query.tif', _query_drawing())]),
                _multipart({'top': TOP, 'text': 'a kettle with a curved handle'}, [])]
    started = time.perf_counter()
    for body, content_type in requests:  # the first of each kind compiles the towers and the top-k
      urllib.request.urlopen(urllib.request.Request(url + 'api/search', body, {'Content-Type': content_type}),
                             timeout=600).read()
    warm_s, loaded_rss = time.perf_counter() - started, _rss_mib(server.pid)
    latencies, errors, peak = [], [], [loaded_rss]
    stop = time.perf_counter() + seconds

    def client(number):
      i = number
      while time.perf_counter() < stop:
        body, content_type = requests[i % 2]
        i += 1
        began = time.perf_counter()
        try:
          with urllib.request.urlopen(urllib.request.Request(url + 'api/search', body, {'Content-Type': content_type}),
                                      timeout=120) as r:
            problem = None if r.status == 200 and b'"hits"' in r.read() else f'HTTP {r.status}'
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:  # HTTPError is a URLError
          problem = str(e)
        latencies.append(time.perf_counter() - began)
        if problem:
          errors.append(problem)

    def sample():
      while time.perf_counter() < stop:
        peak.append(_rss_mib(server.pid))
        time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)] + [threading.Thread(target=sample)]
    began = time.perf_counter()
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    wall = time.perf_counter() - began
  finally:
    server.terminate()
    server.wait(30)
  ms = 1000 * np.array(latencies)
  return {'requests': len(latencies), 'per_s': len(latencies) / wall, 'p50_ms': float(np.percentile(ms, 50)),
          'p99_ms': float(np.percentile(ms, 99)), 'errors': len(errors), 'load_s': load_s, 'warm_s': warm_s,
          'loaded_rss_mib': loaded_rss,
          'peak_rss_mib': max(peak)}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rows', type=int, nargs='+', default=[10_000, 1_000_000])
  parser.add_argument('--clients', type=int, default=8)
  parser.add_argument('--seconds', type=float, default=30)
  parser.add_argument('--work', default=os.path.join(os.environ.get('DESIGNCLIP_CACHE',
                                                                    os.path.expanduser('~/.cache/designclip_jax')),
                                                     'search_load'), help='where the model and indexes are kept')
  args = parser.parse_args()
  model = build_model(os.path.join(args.work, 'model'))
  results = []
  for rows in args.rows:
    index = build_index(os.path.join(args.work, f'index-{rows}'), rows, model)
    results.append((rows, run_load(index, model, args.clients, args.seconds)))
  print(f'machine: {platform.node()} ({os.cpu_count()} CPUs), {datetime.date.today()}, '
        f'command: python bench/search_load.py {" ".join(sys.argv[1:])}'.rstrip())
  print(f'{args.clients} clients on loopback for {args.seconds:g} s per index, alternating a drawing (TIFF upload) and '
        f'words, top {TOP}; index rows: random unit vectors, D = {DIM}, float16')
  print('| index rows | requests | per second | p50 (ms) | p99 (ms) | errors | server start (s) | first two queries, '
        'compiling (s) | server RSS warm / peak (MiB) |')
  print('|---|---|---|---|---|---|---|---|---|')
  for rows, r in results:
    print(f"| {rows:,} | {r['requests']:,} | {r['per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} | "
          f"{r['load_s']:.0f} | {r['warm_s']:.0f} | {r['loaded_rss_mib']:.0f} / {r['peak_rss_mib']:.0f} |")


if __name__ == '__main__':
  main()
