"""Embedding throughput: images/s and texts/s of our jitted towers vs transformers' PyTorch CLIPModel
(get_image_features / get_text_features, torch.no_grad), same shapes, float32, this CPU.

    python bench/embed_throughput.py [--configs tiny mid] [--reps 10]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--configs', nargs='+', default=list(common.CONFIGS))
  parser.add_argument('--reps', type=int, default=10)
  parser.add_argument('--batch', type=int, default=128)
  args = parser.parse_args()
  import jax
  import torch
  from flax import nnx

  from designclip_jax.models import CLIP
  rows = []
  for name in args.configs:
    cfg, _ = common.CONFIGS[name]
    b = common.batch(cfg, args.batch)
    graphdef, state = nnx.split(CLIP(cfg, rngs=nnx.Rngs(0)))
    enc_img = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode_image(x))
    enc_txt = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode_text(x))
    ref = common.torch_clip(cfg).eval()
    pixels = torch.from_numpy(b['image'].transpose(0, 3, 1, 2).copy())
    ids = torch.from_numpy(b['tokens'].astype('int64'))

    def torch_img():
      with torch.no_grad():
        ref.get_image_features(pixel_values=pixels)

    def torch_txt():
      with torch.no_grad():
        ref.get_text_features(input_ids=ids)

    fns = {('images', 'jax'): lambda: enc_img(state, b['image']).block_until_ready(),
           ('images', 'torch'): torch_img,
           ('texts', 'jax'): lambda: enc_txt(state, b['tokens']).block_until_ready(),
           ('texts', 'torch'): torch_txt}
    for fn in fns.values():
      fn(), fn()
    times = {k: [] for k in fns}
    for _ in range(args.reps):
      for k, fn in fns.items():
        t = time.perf_counter()
        fn()
        times[k].append(time.perf_counter() - t)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    for kind in ('images', 'texts'):
      rows.append((name, kind, args.batch / med[(kind, 'jax')], args.batch / med[(kind, 'torch')]))
  print('| config | input | ours (/s) | PyTorch (/s) | ratio |')
  print('|---|---|---|---|---|')
  for name, kind, ours, theirs in rows:
    print(f'| {name} | {kind} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f} |')


if __name__ == '__main__':
  main()
