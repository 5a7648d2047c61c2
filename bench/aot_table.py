"""Every shipped config compiled ahead of time for its Cloud TPU topology (python -m designclip_jax.aot),
FSDP scaling at full depth (ViT-L/14 and ViT-B/16, every data x fsdp split of 8 chips), and the 2-slice
check: markdown tables for bench/RESULTS.md.

    python bench/aot_table.py                       # all three sections
    python bench/aot_table.py --section configs     # or fsdp, slices
    python bench/aot_table.py --out runs/aot_table  # where each compile's JSON report is kept
    python bench/aot_table.py --section fsdp --json fsdp.json   # the rows as JSON too

Each compile runs in its own process, one at a time (a full-depth ViT compile takes minutes of CPU and GiB of
RAM); a report already in --out is reused (--force recompiles). Needs libtpu: pip install -e '.[aot]'.
Numbers are XLA's memory and cost analysis of the compiled TPU program; step times are roofline lower
bounds from its FLOPs and HBM bytes at the chip's peak, not measurements.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 2 ** 30

# (row label, config file, topology ('' = the config's hardware), --config overrides)
CONFIG_ROWS = [
    ('synthetic_tiny', 'configs/synthetic_tiny.py', '', []),
    ('impact_vitb16', 'configs/impact_vitb16.py', '', []),
    ('impact_rn50', 'configs/impact_rn50.py', '', []),
    ('impact_vitl14', 'configs/impact_vitl14.py', '', []),
    ('impact_vitb16 on v5e-16 (16 GiB chips)', 'configs/impact_vitb16.py', 'v5e:4x4', []),
    # GPU plans (unmeasured): the TPU with the nearest per-chip memory (v5p, 95 GiB vs 80 GB)
    ('impact_vitb16, GPU plan (8 GPUs)', 'configs/impact_vitb16.py', 'v5p:2x2x2', []),
    ('impact_vitl14, GPU plan (2 x 8 GPUs)', 'configs/impact_vitl14.py', 'v5p:2x2x4', []),
]
# Full depth: at 2+2 layers the defect of fsdp spanning every chip (data=1) was a 1 GiB rise that read as
# noise; at 24+12 it was 16.6 GiB of temporaries per chip
FSDP_TOPOLOGY, FSDP_BATCH, FSDP_SPLITS = 'v5p:2x2x2', 256, (1, 2, 4, 8)
FSDP_MODELS = [('impact_vitl14', True), ('impact_vitb16', True), ('impact_vitb16', False)]  # (config, remat)
FSDP_ROWS = [(f'{config} remat={int(remat)} fsdp={f}', f'configs/{config}.py', FSDP_TOPOLOGY,
              [f'--config.mesh.fsdp={f}', f'--config.mesh.data={8 // f}', f'--config.train.global_batch={FSDP_BATCH}',
               f'--config.model.remat={remat}'])
             for config, remat in FSDP_MODELS for f in FSDP_SPLITS]
# the multi-slice property does not depend on the model's size: a small ViT keeps the compile short
SLICE_TOPOLOGY = 'v5e:2x2'
SLICE_OVERRIDES = ['--config.mesh.slices=2', '--config.mesh.fsdp=4', '--config.mesh.data=2',
                   '--config.train.global_batch=64']


def run_one(label, config, topology, overrides, out_dir, force, compile_missing=True):
  path = os.path.join(out_dir, label.replace(' ', '_').replace('/', '-').replace(',', '').replace('=', '') + '.json')
  if os.path.exists(path) and not force:
    with open(path) as f:
      return json.load(f)
  if not compile_missing:
    return {'error': 'not compiled (--reuse-only)'}
  cmd = [sys.executable, '-m', 'designclip_jax.aot', f'--config={config}', f'--output={path}', *overrides]
  if topology:
    cmd.append(f'--topology={topology}')
  print('$', ' '.join(cmd[1:]), file=sys.stderr, flush=True)
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
  sys.stderr.write(done.stdout[-3000:])
  if done.returncode not in (0, 1) or not os.path.exists(path):  # 1 = compiled but does not fit
    sys.stderr.write(done.stderr[-3000:])
    return {'error': (done.stderr.strip().splitlines() or ['no output'])[-1][:300]}
  with open(path) as f:
    return json.load(f)


def gib(b):
  return f'{b / GIB:.2f}'


def config_table(rows) -> str:
  lines = ['| config | topology (chips) | mesh | global batch | per-chip GiB: params + opt / batch / temp / **total** '
           '| HBM GiB | fits | TFLOP/step | roofline step ≥ ms (HBM traffic est.) | samples/s ≤ | core-hours ≥ (steps) |',
           '|---|---|---|---|---|---|---|---|---|---|---|']
  for label, r in rows:
    if 'error' in r:
      lines.append(f'| {label} | error: {r["error"]} |' + ' |' * 9)
      continue
    b = r['per_chip_bytes']
    mesh = ' × '.join(f'{k} {v}' for k, v in r['mesh'].items())
    memory = (f'{gib(b["parameters"] + b["optimizer"])} / {gib(b["batch"])} / '
              f'{gib(b["temporaries"]) if "temporaries" in b else "–"} / **{gib(b["total"])}**')
    roof = r.get('roofline')
    flops = f'{r["flops_per_step"] / 1e12:,.1f}' if r.get('flops_per_step') else '–'
    tail = (f'{roof["step_seconds"] * 1e3:,.0f} (HBM est. {roof["hbm_traffic_seconds"] * 1e3:,.0f}) | '
            f'{roof["samples_per_second"]:,.0f} | {roof["core_hours"]:,.1f} ({roof["steps"]})') if roof else '– | – | –'
    lines.append(f'| {label} | {r["topology"]} ({r["chips"]}) | {mesh} | {r["global_batch"]} | {memory} | '
                 f'{gib(r["hbm_bytes_per_chip"])} | {"yes" if r["fits"] else "**no**"} | {flops} | {tail} |')
  return '\n'.join(lines)


def fsdp_table(rows) -> str:
  lines = ['| model | remat | mesh data × fsdp | params + optimizer GiB | arguments GiB | temporaries GiB | '
           '**total GiB** | TFLOP per chip | all-gather GB per chip | all-reduce + reduce-scatter GB per chip | '
           'collective-permutes |', '|---|---|---|---|---|---|---|---|---|---|---|']
  for label, r in rows:
    if 'error' in r:
      lines.append(f'| {label} | error: {r["error"]} |' + ' |' * 9)
      continue
    b = r['per_chip_bytes']
    moved = lambda *ops: sum(c['bytes'] for c in r['collectives'] if c['op'] in ops) / 1e9
    permutes = sum(c['count'] for c in r['collectives'] if c['op'] == 'collective-permute')
    flops = f'{r["flops_per_chip"] / 1e12:,.1f}' if r.get('flops_per_chip') else '–'
    lines.append(f'| {r["model"]} | {"on" if r["remat"] else "off"} | {r["mesh"]["data"]} × {r["mesh"]["fsdp"]} | '
                 f'{gib(b["parameters"] + b["optimizer"])} | {gib(b["arguments"]) if "arguments" in b else "–"} | '
                 f'{gib(b.get("temporaries", 0))} | **{gib(b["total"])}** | {flops} | {moved("all-gather"):.2f} | '
                 f'{moved("all-reduce", "reduce-scatter"):.2f} | {permutes} |')
  return '\n'.join(lines)


def fsdp_summary(rows) -> dict:
  """Per model and remat: the per-chip totals in fsdp order, and whether each split needs less than the last."""
  by_model = {}
  for _, r in rows:
    if 'error' not in r:
      by_model.setdefault(f'{r["model"]} remat={r["remat"]}', []).append((r['mesh']['fsdp'], r['per_chip_bytes']['total']))
  return {k: {'total_gib_by_fsdp': {f: round(t / GIB, 3) for f, t in sorted(v)},
              'falls_as_fsdp_grows': all(a[1] > b[1] for a, b in zip(sorted(v), sorted(v)[1:]))}
          for k, v in by_model.items()}


def slices_table(r) -> str:
  if 'error' in r:
    return f'error: {r["error"]}'
  lines = ['| collective | mesh axes | count | groups of | within one slice | bytes per chip |', '|---|---|---|---|---|---|']
  for c in r['collectives']:
    lines.append(f'| {c["op"]} | {c["axes"]} | {c["count"]} | {c["group_size"]} | '
                 f'{"yes" if c["within_slice"] else "no (crosses DCN)"} | {c["bytes"]:,} |')
  return '\n'.join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--section', nargs='+', default=['configs', 'fsdp', 'slices'], choices=['configs', 'fsdp', 'slices'])
  p.add_argument('--out', default=os.path.join(ROOT, 'runs', 'aot_table'))
  p.add_argument('--force', action='store_true', help='recompile reports already in --out')
  p.add_argument('--reuse-only', action='store_true', help='tabulate the reports in --out, compile nothing')
  p.add_argument('--json', help='also write every row (label -> report) and the FSDP summary here')
  args = p.parse_args()
  tables = {}
  os.makedirs(args.out, exist_ok=True)
  print(f'machine: {platform.node()} ({os.cpu_count()} CPUs), {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; '
        f'command: python bench/aot_table.py --section {" ".join(args.section)}\n')
  if 'configs' in args.section:
    rows = [(label, run_one(label, *rest, args.out, args.force, not args.reuse_only)) for label, *rest in CONFIG_ROWS]
    tables['configs'] = dict(rows)
    print('### Every config on its target (XLA:TPU compile, nothing allocated)\n')
    print(config_table(rows) + '\n', flush=True)
  if 'fsdp' in args.section:
    rows = [(label, run_one(label, *rest, args.out, args.force, not args.reuse_only)) for label, *rest in FSDP_ROWS]
    tables['fsdp'], tables['fsdp_summary'] = dict(rows), fsdp_summary(rows)
    print(f'### FSDP scaling at full depth: every data × fsdp split of {FSDP_TOPOLOGY} (8 chips), global batch '
          f'{FSDP_BATCH}, bf16, AdamW\n')
    print(fsdp_table(rows) + '\n', flush=True)
    for model, summary in tables['fsdp_summary'].items():
      print(f'{model}: per-chip total {"falls" if summary["falls_as_fsdp_grows"] else "does NOT fall"} as fsdp grows '
            f'(fsdp {", ".join(f"{f}: {t:.2f}" for f, t in summary["total_gib_by_fsdp"].items())} GiB)')
    print()
  if 'slices' in args.section:
    r = run_one('two_slices', 'bench/aot_variants.py:vitb16_2layers', SLICE_TOPOLOGY, SLICE_OVERRIDES, args.out,
                args.force, not args.reuse_only)
    print(f'### Two slices of {SLICE_TOPOLOGY} (mesh.slices=2, data=2 × fsdp=4; ViT-B/16 widths, 2+2 layers, '
          'global batch 64): collectives of the compiled step\n')
    print(slices_table(r) + '\n', flush=True)
    tables['slices'] = r
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(tables, f, indent=1)


if __name__ == '__main__':
  main()
