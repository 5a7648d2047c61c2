"""What GradCache accumulation (train.micro_batches) buys: XLA's compiled temporary memory of one full
DesignCLIP train step (all three losses, fusion head) against the number of micro-batches, at a fixed
global batch, on one device. Nothing is allocated: the step is lowered from abstract shapes and compiled,
and the numbers are XLA's own memory analysis of that program (activations and workspace; parameters and
optimizer state are the arguments column). Then a short timed run of a small config shows the compute cost.

    python bench/accumulation_memory.py                       # ViT-B/16 at 224 px, global batch 64
    python bench/accumulation_memory.py --preset ViT-L/14 --batch 32 --micro 1 2 4
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

LAMBDAS = (1.0, 0.1, 0.2)


def compiled_step(clip_cfg, batch, micro, allocate=False):
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from designclip_jax import sharding
  from designclip_jax.train.config import base_config
  from designclip_jax.weights.model_spec import ModelSpec
  from designclip_jax.train.step import jit_train_step, init_state, make_optimizer
  train_cfg = base_config().train
  train_cfg.learning_rate, train_cfg.warmup_steps = 1e-4, 0
  spec = ModelSpec(clip=clip_cfg, num_classes=33, tokenizer_dir='', fusion_width=256)
  mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  tx = make_optimizer(train_cfg)
  if allocate:
    am, ao, model_state, opt_state = init_state(spec.build, tx, mesh)
  else:
    am = nnx.eval_shape(spec.build)
    ao = nnx.eval_shape(lambda: nnx.Optimizer(spec.build(), tx, wrt=nnx.Param))
    model_state, opt_state = nnx.state(am), nnx.state(ao)
  step = jit_train_step(am, ao, mesh, LAMBDAS, micro, pixel_normalization='clip')
  host = common.batch(clip_cfg, batch)
  if allocate:
    return step, model_state, opt_state, sharding.host_local_to_global(host, mesh)
  abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, jnp.asarray(v).dtype) for k, v in host.items()}
  return step.fn.lower(model_state, opt_state, abstract_batch).compile()


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--preset', default='ViT-B/16')
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--micro', type=int, nargs='+', default=[1, 2, 4, 8])
  p.add_argument('--timed-steps', type=int, default=5, help='steps of the tiny config per setting (0: skip)')
  args = p.parse_args()
  from designclip_jax.models import preset

  clip_cfg = preset(args.preset)
  print(f'## {args.preset}, global batch {args.batch}, one CPU device: XLA memory analysis of the compiled step\n')
  print('| micro-batches | rows per pass | temp (activations) MiB | arguments MiB | compile s |')
  print('|---|---|---|---|---|')
  for k in args.micro:
    start = time.perf_counter()
    mem = compiled_step(clip_cfg, args.batch, k).memory_analysis()
    print(f'| {k} | {args.batch // k} | {mem.temp_size_in_bytes / 2**20:,.0f} | '
          f'{mem.argument_size_in_bytes / 2**20:,.0f} | {time.perf_counter() - start:.0f} |', flush=True)

  if args.timed_steps:
    import jax
    cfg, n = common.CONFIGS['tiny']
    print(f'\n## compute cost: tiny config, global batch {n}, median of {args.timed_steps} steps\n')
    print('| micro-batches | s / step | vs 1 |')
    print('|---|---|---|')
    base = None
    for k in args.micro:
      step, ms, os_, gb = compiled_step(cfg, n, k, allocate=True)
      times = []
      for _ in range(args.timed_steps + 1):
        start = time.perf_counter()
        ms, os_, metrics = step(ms, os_, gb)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
      med = sorted(times[1:])[len(times[1:]) // 2]
      base = base or med
      print(f'| {k} | {med:.3f} | {med / base:.2f}x |', flush=True)


if __name__ == '__main__':
  main()
