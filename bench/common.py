"""Shared set-up for the throughput benchmarks: model configs, batches, the PyTorch reference, peak FLOP/s."""

import os
import time

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # idle torch OpenMP threads otherwise slow JAX ~1.5x

import numpy as np

from designclip_jax.models import preset

# name -> (our CLIPConfig, global batch)
CONFIGS = {
    'tiny': (preset('tiny', text_vocab_size=2048), 64),
    'mid': (preset('tiny', vision_image_size=128, vision_patch_size=16, vision_width=256, vision_layers=6,
                   vision_heads=8, vision_mlp_dim=1024, text_width=256, text_layers=6, text_heads=8,
                   text_mlp_dim=1024, text_vocab_size=8192, text_context_length=32, embed_dim=256), 64),
}


def batch(clip_cfg, n, seed=0):
  """A random training batch as data.pipeline ships it (pipeline.batch_shapes: uint8 grey drawings, which the
  train step normalises)."""
  from designclip_jax.data.pipeline import batch_shapes
  rng = np.random.default_rng(seed)
  size, length = clip_cfg.vision.image_size, clip_cfg.text.context_length
  tokens = rng.integers(2, clip_cfg.text.vocab_size - 1, (n, length)).astype(np.int32)
  tokens[:, 0] = 0
  tokens[np.arange(n), rng.integers(4, length, n)] = clip_cfg.text.eos_token_id
  drawings = lambda: rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8)
  out = {'image': drawings(), 'view': drawings(), 'tokens': tokens,
         'label': rng.integers(0, 33, n).astype(np.int32), 'weight': np.ones(n, np.float32),
         'record': np.arange(n, dtype=np.int32), 'family': np.arange(n, dtype=np.int32),
         'view_ids': rng.integers(0, 7, (n, 2)).astype(np.int32)}
  expected = batch_shapes(n, size, length)
  assert {k: (v.shape, v.dtype) for k, v in out.items()} == {k: (s, np.dtype(d)) for k, (s, d) in expected.items()}
  return out


def model_pixels(drawings, normalization='clip'):
  """uint8 grey drawings -> the float32 RGB (N, H, W, 3) that the towers take (for calls of the towers
  themselves, and for PyTorch)."""
  from designclip_jax.data.images import normalize
  return normalize(drawings, normalization)


def torch_clip(clip_cfg):
  """transformers' PyTorch CLIPModel with the same shapes (random weights)."""
  import torch
  from transformers import CLIPModel

  from designclip_jax.weights.hf_format import config_to_hf
  torch.manual_seed(0)
  return CLIPModel(config_to_hf(clip_cfg)).train()


def peak_flops(seconds=2.0, n=4096):
  """Measured float32 matmul FLOP/s of this machine (the MFU denominator)."""
  import jax
  import jax.numpy as jnp
  x = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(x).block_until_ready()
  reps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    f(x).block_until_ready()
    reps += 1
  return 2 * n ** 3 * reps / (time.perf_counter() - start)


def flops_of(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops'])
