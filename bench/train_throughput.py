"""Train-step throughput: our jitted DesignCLIP step vs transformers' PyTorch CLIPModel + CLIP loss +
torch.optim.AdamW, same shapes, same batch, float32, on this machine's CPU.

    python bench/train_throughput.py [--configs tiny mid] [--steps 10] [--no-compile] [--no-memory]

The JAX side is the real training step (train.step.jit_train_step) with only L_CACL on (λ = 0, 1, 0),
i.e. the standard CLIP objective the reference optimises. Warm-up excluded; steps of the two
alternate so machine drift hits both; medians reported, of wall and of CPU time (user + system, all
threads: the figure that holds on a shared machine) and minor page faults per step. MFU = XLA's FLOP count of the step /
step time / float32 matmul peak measured in the same run. Peak memory is each side's peak RSS
in a separate process (3 steps).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (sets OMP_WAIT_POLICY before torch loads)

LAMBDAS = (0.0, 1.0, 0.0)


def jax_step(clip_cfg, n):
  import jax

  from designclip_jax import sharding
  from designclip_jax.train.config import base_config
  from designclip_jax.weights.model_spec import ModelSpec
  from designclip_jax.train.step import jit_train_step, init_state, make_optimizer
  train_cfg = base_config().train
  train_cfg.learning_rate, train_cfg.warmup_steps = 1e-4, 0
  spec = ModelSpec(clip=clip_cfg, num_classes=33, tokenizer_dir='', head='linear')
  mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  am, ao, ms, os_ = init_state(spec.build, make_optimizer(train_cfg), mesh)
  step = jit_train_step(am, ao, mesh, LAMBDAS, pixel_normalization='clip')
  gb = sharding.host_local_to_global(common.batch(clip_cfg, n), mesh)
  flops = common.flops_of(step.fn.lower(ms, os_, gb).compile())
  state = {'m': ms, 'o': os_}

  def run():
    state['m'], state['o'], metrics = step(state['m'], state['o'], gb)
    jax.block_until_ready(metrics)

  return run, flops


def torch_step(clip_cfg, n, compile_=False):
  import torch
  model = common.torch_clip(clip_cfg)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)
  b = common.batch(clip_cfg, n)
  pixels = torch.from_numpy(common.model_pixels(b['image']).transpose(0, 3, 1, 2).copy())
  ids = torch.from_numpy(b['tokens'].astype('int64'))

  def step():
    opt.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, pixel_values=pixels, return_loss=True).loss
    loss.backward()
    opt.step()
    return loss

  fn = torch.compile(step) if compile_ else step
  return lambda: fn()


def median_times(fns, steps, warmup=2):
  """Per implementation, medians over the steps of (wall s, CPU s, minor page faults): CPU is user + system
  time of the process, all threads — what a step costs, whatever else a shared machine runs."""
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  samples = {k: [] for k in fns}
  for _ in range(steps):
    for k, fn in fns.items():  # alternate
      faults, cpu, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time(), time.perf_counter()
      fn()
      samples[k].append((time.perf_counter() - t, time.process_time() - cpu,
                         resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))
  return {k: tuple(statistics.median(column) for column in zip(*v)) for k, v in samples.items()}


def peak_rss(side, config):
  code = (f'import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import common, '
          f'train_throughput as t; cfg, n = common.CONFIGS[{config!r}]; '
          f'f = t.jax_step(cfg, n)[0] if {side!r} == "jax" else t.torch_step(cfg, n); '
          '[f() for _ in range(3)]; '
          # VmHWM, not ru_maxrss: the latter carries over the parent's high-water mark through fork
          'print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
  return float(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else float('nan')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--configs', nargs='+', default=list(common.CONFIGS))
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--no-compile', action='store_true', help='skip the torch.compile variant')
  parser.add_argument('--json', help='also write the rows here')
  parser.add_argument('--memory-only', action='store_true', help='only the peak-RSS column')
  parser.add_argument('--no-memory', action='store_true', help='skip the peak-RSS column (4 processes per config)')
  args = parser.parse_args()
  if args.memory_only:
    for name in args.configs:
      print(name, {side: f'{peak_rss(side, name):.0f} MiB' for side in ('jax', 'torch')})
    return
  peak = common.peak_flops()
  rows = []
  for name in args.configs:
    cfg, n = common.CONFIGS[name]
    ours, flops = jax_step(cfg, n)
    fns = {'jax': ours, 'torch eager': torch_step(cfg, n)}
    if not args.no_compile:
      try:
        compiled = torch_step(cfg, n, compile_=True)
        compiled()
        fns['torch.compile'] = compiled
      except Exception as e:  # pylint: disable=broad-except
        print(f'torch.compile unavailable here: {e.__class__.__name__}: {str(e)[:200]}')
    times = median_times(fns, args.steps)
    mem = {} if args.no_memory else {'jax': peak_rss('jax', name), 'torch eager': peak_rss('torch', name)}
    for k, (t, cpu, faults) in times.items():
      rows.append({'config': name, 'batch': n, 'impl': k, 'step_s': t, 'samples_per_s': n / t,
                   'vs_torch_eager': times['torch eager'][0] / t, 'mfu': flops / t / peak,
                   'peak_rss_mib': mem.get(k, float('nan')), 'cpu_s': cpu,
                   'vs_torch_eager_cpu': times['torch eager'][1] / cpu, 'minor_faults': faults})
  print(f'\nfloat32 matmul peak measured: {peak / 1e9:.0f} GFLOP/s')
  print('| config | batch | implementation | step (s) | samples/s | × torch eager | MFU | peak RSS (MiB) '
        '| CPU s/step | × torch eager (CPU) | page faults/step |')
  print('|---|---|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    print(f"| {r['config']} | {r['batch']} | {r['impl']} | {r['step_s']:.3f} | {r['samples_per_s']:.0f} | "
          f"{r['vs_torch_eager']:.2f} | {r['mfu'] * 100:.0f}% | {r['peak_rss_mib']:.0f} | {r['cpu_s']:.3f} | "
          f"{r['vs_torch_eager_cpu']:.2f} | {r['minor_faults']:.0f} |")
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'peak_flops': peak, 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  main()
