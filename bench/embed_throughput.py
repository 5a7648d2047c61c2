"""Embedding throughput: images/s and texts/s of our jitted towers vs PyTorch, same shapes, float32, this
CPU, under torch.no_grad: transformers' CLIPModel (get_image_features / get_text_features) for the ViT
configs, OpenAI's clip/model.py (encode_image / encode_text; the openai-clip package) for RN50.

    python bench/embed_throughput.py [--configs tiny mid RN50] [--reps 10]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests.openai_reference
import common  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--configs', nargs='+', default=[*common.CONFIGS, 'RN50'])
  parser.add_argument('--reps', type=int, default=10)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--resnet-batch', type=int, default=32, help='batch for RN50 (224 px)')
  args = parser.parse_args()
  import jax
  import torch
  from flax import nnx

  from designclip_jax.models import CLIP, preset
  rows = []
  for name in args.configs:
    resnet = name == 'RN50'
    cfg = preset('RN50') if resnet else common.CONFIGS[name][0]
    n = args.resnet_batch if resnet else args.batch
    b = common.batch(cfg, n)
    b['image'] = common.model_pixels(b['image'])  # the towers themselves, as PyTorch's: float RGB
    graphdef, state = nnx.split(CLIP(cfg, rngs=nnx.Rngs(0)))
    enc_img = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode_image(x))
    enc_txt = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode_text(x))
    pixels = torch.from_numpy(b['image'].transpose(0, 3, 1, 2).copy())
    ids = torch.from_numpy(b['tokens'].astype('int64'))
    if resnet:
      from tests.openai_reference import openai_model_module  # pylint: disable=import-outside-toplevel
      ref = openai_model_module().CLIP(1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12).eval()
      ref_img, ref_txt = (lambda: ref.encode_image(pixels)), (lambda: ref.encode_text(ids))
    else:
      ref = common.torch_clip(cfg).eval()
      ref_img = lambda: ref.get_image_features(pixel_values=pixels)
      ref_txt = lambda: ref.get_text_features(input_ids=ids)

    def torch_img():
      with torch.no_grad():
        ref_img()

    def torch_txt():
      with torch.no_grad():
        ref_txt()

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
      rows.append((name, n, kind, n / med[(kind, 'jax')], n / med[(kind, 'torch')]))
  print('| config | batch | input | ours (/s) | PyTorch (/s) | ratio |')
  print('|---|---|---|---|---|---|')
  for name, n, kind, ours, theirs in rows:
    print(f'| {name} | {n} | {kind} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f} |')


if __name__ == '__main__':
  main()
