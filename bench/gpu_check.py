"""One short check for a single NVIDIA GPU (H100/H200): correctness of the ViT-B/16 towers against a
float32 CPU run, then the bf16 train step (all three losses, fusion head) of ViT-B/16 and ViT-B/32 with and
without remat: measured step time, samples/s, and utilisation of the card's dense bf16 peak. This is what
the AOT table (bench/aot_table.py: memory and roofline bounds, no device) cannot tell. Installs nothing;
needs jax with CUDA.

    python bench/gpu_check.py [--peak-tflops 989] [--steps 10] [--out results.json]
    python bench/gpu_check.py --dry-run     # the same code path on this CPU, tiny towers, in seconds

FLOPs per step come from XLA's cost analysis of the compiled step (per device). HFU divides the compiled
program's FLOPs (remat recompute included) by time x peak; MFU divides the model's FLOPs (those of the
same step without remat, from the row compiled without it) by the same. Budget: under 8 minutes including
compilation on an H100 (batch sizes chosen to fill 80 GB).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def towers_match_cpu(preset_name, accelerator):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from designclip_jax.models import CLIP, preset
  cfg = preset(preset_name)
  model = CLIP(cfg, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  rng = np.random.default_rng(0)
  size, length = cfg.vision.image_size, cfg.text.context_length
  pixels = rng.standard_normal((4, size, size, 3), dtype=np.float32)
  ids = rng.integers(1, cfg.text.vocab_size - 1, (4, length)).astype(np.int32)
  ids[:, length // 4] = cfg.text.eos_token_id
  out = {}
  for device in ('cpu', accelerator):
    dev = jax.devices(device)[0]
    s = jax.device_put(state, dev)
    f = jax.jit(lambda s, p, t: (nnx.merge(graphdef, s).encode_image(p), nnx.merge(graphdef, s).encode_text(t)))
    with jax.default_matmul_precision('float32'):
      out[device] = [np.asarray(x) for x in f(s, jax.device_put(pixels, dev), jax.device_put(ids, dev))]
  errs = [float(np.max(np.abs(g - c)) / np.max(np.abs(c))) for g, c in zip(out[accelerator], out['cpu'])]
  bf16 = CLIP(cfg, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  img = np.asarray(jax.jit(lambda p: bf16.encode_image(p))(pixels))
  cos = float(np.min(np.sum(img * out['cpu'][0], 1) / np.linalg.norm(img, axis=1)
                     / np.linalg.norm(out['cpu'][0], axis=1)))
  return {'image_rel_err_fp32': errs[0], 'text_rel_err_fp32': errs[1], 'image_min_cosine_bf16': cos}


def step_throughput(preset_name, batch, remat, steps, peak, model_flops=None):
  """Median step time of the compiled train step; ``model_flops``: the same step's FLOPs without remat."""
  import jax
  import numpy as np

  import common
  from designclip_jax import sharding
  from designclip_jax.models import preset
  from designclip_jax.train.config import base_config
  from designclip_jax.weights.model_spec import ModelSpec
  from designclip_jax.train.step import jit_train_step, init_state, make_optimizer
  cfg = base_config().train
  spec = ModelSpec(clip=preset(preset_name), num_classes=33, tokenizer_dir='', dtype='bfloat16', remat=remat)
  mesh = sharding.make_mesh(-1, 1)
  am, ao, ms, os_ = init_state(spec.build, make_optimizer(cfg), mesh)
  step = jit_train_step(am, ao, mesh, (1.0, 0.1, 0.2), pixel_normalization='clip')
  gb = sharding.host_local_to_global(common.batch(spec.clip, batch), mesh)
  t0 = time.perf_counter()
  compiled = step.fn.lower(ms, os_, gb).compile()  # run this executable: jit's own cache would compile again
  flops = common.flops_of(compiled)  # per device
  ms, os_, m = compiled(ms, os_, gb)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    ms, os_, m = compiled(ms, os_, gb)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  t = float(np.median(times))
  if model_flops is None and not remat:
    model_flops = flops
  return {'model': preset_name, 'batch': batch, 'remat': remat, 'devices': mesh.size, 'step_s': t,
          'samples_per_s': batch / t, 'flops_per_device': flops, 'hfu': flops / t / peak,
          'mfu': None if model_flops is None else model_flops / t / peak, 'compile_s': compile_s,
          'loss': float(m['loss'])}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--peak-tflops', type=float, default=989.0)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--out', default='')
  parser.add_argument('--dry-run', action='store_true',
                      help='check the script on this CPU: tiny towers, small batches, CPU against CPU')
  args = parser.parse_args()
  import jax
  print('devices:', jax.devices(), flush=True)
  if args.dry_run:
    accelerator, check_preset, runs, steps = 'cpu', 'tiny', (('tiny', 16),), min(args.steps, 2)
  else:
    accelerator, check_preset, runs, steps = 'gpu', 'ViT-B/16', (('ViT-B/16', 512), ('ViT-B/32', 1024)), args.steps
  result = {'correctness': towers_match_cpu(check_preset, accelerator), 'throughput': [],
            'peak_tflops': args.peak_tflops}
  print(json.dumps(result['correctness']), flush=True)
  for name, batch in runs:
    model_flops = None
    for remat in (False, True):
      try:
        row = step_throughput(name, batch, remat, steps, args.peak_tflops * 1e12, model_flops)
        if not remat:
          model_flops = row['flops_per_device']
      except Exception as e:  # pylint: disable=broad-except  (OOM at this batch: report, go on)
        row = {'model': name, 'batch': batch, 'remat': remat, 'error': f'{e.__class__.__name__}: {str(e)[:200]}'}
      result['throughput'].append(row)
      print(json.dumps(row), flush=True)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=1)


if __name__ == '__main__':
  main()
