"""What FSDP shards: per-device memory and communication of the real DesignCLIP train step (all three
losses, fusion head) compiled for 8 simulated CPU devices, pure data parallelism against FSDP at the same
global batch. Nothing is allocated: the step is lowered from shapes and compiled, and the numbers are XLA's
memory analysis of each program (arguments = parameters + optimizer state + the device's batch rows;
temporaries = activations and workspace, including FSDP's gathered weights) and the collectives in its HLO.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python bench/fsdp_memory.py
    python bench/fsdp_memory.py --preset ViT-B/16 --layers 2 --batch 128 --meshes 8x1 2x4 1x8
"""

import argparse
import collections
import datetime
import os
import platform
import sys
import time

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

LAMBDAS = (1.0, 0.1, 0.2)
MiB = 2 ** 20


def jit_train_step(clip_cfg, batch, data, fsdp, dtype, remat):
  import jax

  from designclip_jax import sharding
  from designclip_jax.train.config import base_config
  from designclip_jax.train.step import lower_step, make_optimizer
  from designclip_jax.weights.model_spec import ModelSpec
  train_cfg = base_config().train
  train_cfg.warmup_steps = 0
  spec = ModelSpec(clip=clip_cfg, num_classes=33, tokenizer_dir='', dtype=dtype, remat=remat)
  mesh = sharding.make_mesh(data, fsdp, devices=jax.devices()[:data * fsdp])
  host = common.batch(clip_cfg, batch)
  compiled = lower_step(spec.build, make_optimizer(train_cfg), mesh, LAMBDAS, host,
                        pixel_normalization='clip').compile()
  return compiled, sum(v.nbytes for v in host.values()) / (data * fsdp)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--preset', default='ViT-L/14')
  p.add_argument('--layers', type=int, default=1, help='layers of each tower (the widths stay the preset\'s)')
  p.add_argument('--batch', type=int, default=64, help='global batch')
  p.add_argument('--dtype', default='bfloat16')
  p.add_argument('--no-remat', dest='remat', action='store_false')
  p.add_argument('--meshes', nargs='+', default=['8x1', '1x8'], help='data x fsdp')
  args = p.parse_args()
  import jax

  from designclip_jax import sharding
  from designclip_jax.models import preset

  clip_cfg = preset(args.preset, vision_layers=args.layers, text_layers=args.layers)
  print(f'## {args.preset} widths, {args.layers} layer(s) per tower, global batch {args.batch}, {args.dtype}, '
        f'remat={args.remat}: one compiled train step per mesh\n')
  print(f'{platform.node()}, {jax.devices()[0].device_kind} x {jax.device_count()} (simulated), '
        f'jax {jax.__version__}, {datetime.date.today()}; command: python {" ".join(sys.argv)}\n')
  print('| mesh data x fsdp | params + optimizer MiB / device | temporaries MiB / device | collectives '
        '(count, MiB per device) | collective-permutes | largest all-gather | compile s |')
  print('|---|---|---|---|---|---|---|')
  for mesh in args.meshes:
    data, fsdp = map(int, mesh.split('x'))
    start = time.perf_counter()
    compiled, batch_bytes = jit_train_step(clip_cfg, args.batch, data, fsdp, args.dtype, args.remat)
    seconds = time.perf_counter() - start
    mem = compiled.memory_analysis()
    found = sharding.hlo_collectives(compiled.as_text())
    per_op = collections.defaultdict(lambda: [0, 0])
    for op, _, size in found:
      per_op[op][0] += 1
      per_op[op][1] += size
    summary = ', '.join(f'{op} {n} ({size / MiB:,.0f})' for op, (n, size) in sorted(per_op.items()))
    gathers = [(size, shape) for op, shape, size in found if op == 'all-gather']
    largest = max(gathers)[1] if gathers else '–'
    print(f'| {data} x {fsdp} | {(mem.argument_size_in_bytes - batch_bytes) / MiB:,.0f} | '
          f'{mem.temp_size_in_bytes / MiB:,.0f} | {summary} | {per_op["collective-permute"][0]} | '
          f'`{largest}` | {seconds:.0f} |', flush=True)


if __name__ == '__main__':
  main()
