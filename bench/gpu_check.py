"""One short check for a single NVIDIA GPU (H100/H200): correctness of the ViT-B/16 towers against a
float32 CPU run, then bf16 train-step throughput of ViT-B/16 and ViT-B/32 with and without remat,
as samples/s and MFU against the card's dense bf16 peak. Installs nothing; needs jax with CUDA.

    python bench/gpu_check.py [--peak-tflops 989] [--steps 10] [--out results.json]

Budget: under 8 minutes including compilation on an H100 (batch sizes chosen to fill 80 GB).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def towers_match_cpu():
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from designclip_jax.models import CLIP, preset
  cfg = preset('ViT-B/16')
  model = CLIP(cfg, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  rng = np.random.default_rng(0)
  pixels = rng.standard_normal((4, 224, 224, 3), dtype=np.float32)
  ids = rng.integers(1, 49000, (4, 77)).astype(np.int32)
  ids[:, 20] = cfg.text.eos_token_id
  out = {}
  for device in ('cpu', 'gpu'):
    dev = jax.devices(device)[0]
    s = jax.device_put(state, dev)
    f = jax.jit(lambda s, p, t: (nnx.merge(graphdef, s).encode_image(p), nnx.merge(graphdef, s).encode_text(t)))
    with jax.default_matmul_precision('float32'):
      out[device] = [np.asarray(x) for x in f(s, jax.device_put(pixels, dev), jax.device_put(ids, dev))]
  errs = [float(np.max(np.abs(g - c)) / np.max(np.abs(c))) for g, c in zip(out['gpu'], out['cpu'])]
  bf16 = CLIP(cfg, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  img = np.asarray(jax.jit(lambda p: bf16.encode_image(p))(pixels))
  cos = float(np.min(np.sum(img * out['cpu'][0], 1) / np.linalg.norm(img, axis=1)
                     / np.linalg.norm(out['cpu'][0], axis=1)))
  return {'image_rel_err_fp32': errs[0], 'text_rel_err_fp32': errs[1], 'image_min_cosine_bf16': cos}


def step_throughput(preset_name, batch, remat, steps, peak):
  import jax
  import numpy as np

  import common
  from designclip_jax import sharding
  from designclip_jax.models import preset
  from designclip_jax.train.config import base_config
  from designclip_jax.weights.model_spec import ModelSpec
  from designclip_jax.train.step import compile_step, init_state, make_optimizer
  cfg = base_config().train
  spec = ModelSpec(clip=preset(preset_name), num_classes=33, tokenizer_dir='', dtype='bfloat16', remat=remat)
  mesh = sharding.make_mesh(-1, 1)
  am, ao, ms, os_ = init_state(spec.build, make_optimizer(cfg), mesh)
  step = compile_step(am, ao, mesh, (1.0, 0.1, 0.2))
  gb = sharding.global_batch(common.batch(spec.clip, batch), mesh)
  t0 = time.perf_counter()
  compiled = step.fn.lower(ms, os_, gb).compile()
  flops = common.flops_of(compiled)
  ms, os_, m = step(ms, os_, gb)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    ms, os_, m = step(ms, os_, gb)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  t = float(np.median(times))
  return {'model': preset_name, 'batch': batch, 'remat': remat, 'step_s': t, 'samples_per_s': batch / t,
          'mfu': flops / t / peak, 'compile_s': compile_s, 'loss': float(m['loss'])}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--peak-tflops', type=float, default=989.0)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  import jax
  print('devices:', jax.devices(), flush=True)
  result = {'correctness': towers_match_cpu(), 'throughput': []}
  print(json.dumps(result['correctness']), flush=True)
  for name, batch in (('ViT-B/16', 512), ('ViT-B/32', 1024)):
    for remat in (False, True):
      try:
        row = step_throughput(name, batch, remat, args.steps, args.peak_tflops * 1e12)
      except Exception as e:  # pylint: disable=broad-except  (OOM at this batch: report, go on)
        row = {'model': name, 'batch': batch, 'remat': remat, 'error': f'{e.__class__.__name__}: {str(e)[:200]}'}
      result['throughput'].append(row)
      print(json.dumps(row), flush=True)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=1)


if __name__ == '__main__':
  main()
