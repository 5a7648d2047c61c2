"""What a compile reports: per-chip memory, FLOPs, the roofline bound, the knobs that lower memory, and the
compiled program's collectives by mesh axis."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re

import numpy as np

from designclip_jax import sharding
from designclip_jax.aot.topology import GIB, Chip, chip_of


@dataclasses.dataclass
class Report:
  config_name: str
  topology: str
  chips: int
  mesh: dict
  global_batch: int
  micro_batches: int
  model: str
  dtype: str
  remat: bool
  hbm_bytes_per_chip: int
  per_chip_bytes: dict
  fits: bool
  flops_per_step: float | None  # the whole step, all chips
  flops_per_chip: float | None
  bytes_accessed_per_chip: float | None
  roofline: dict | None
  advice: list
  notes: list
  compile_seconds: float
  slices: int = 1
  collectives: list = dataclasses.field(default_factory=list)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  def table(self) -> str:
    gib = lambda b: f'{b / GIB:.2f} GiB' if b >= GIB / 10 else f'{b / 2 ** 20:.1f} MiB'
    chip = chip_of(self.topology)
    rows = [('config', self.config_name),
            ('topology', f'{self.slices} x ' * (self.slices > 1) + f'{self.topology} ({self.chips} chips, {chip.name})'
             if chip
             else f'{self.topology} ({self.chips} devices of this machine)'),
            ('mesh', ' x '.join(f'{k}={v}' for k, v in self.mesh.items())),
            ('model', f'{self.model}, {self.dtype}, remat={self.remat}'),
            ('global batch', f'{self.global_batch} ({self.global_batch // self.chips} per chip'
                             + (f', {self.micro_batches} micro-batches)' if self.micro_batches > 1 else ')'))]
    for key in ('parameters', 'optimizer', 'batch', 'arguments', 'temporaries', 'outputs', 'total'):
      if key in self.per_chip_bytes:
        rows.append((f'per chip: {key}', gib(self.per_chip_bytes[key])))
    hbm_source = 'Cloud TPU docs' if chip else f'host RAM / {self.chips} devices'
    rows.append(('per chip: memory', f'{gib(self.hbm_bytes_per_chip)} ({hbm_source})'))
    rows.append(('fits', 'yes' if self.fits else 'NO'))
    if self.flops_per_step is not None:
      rows.append(('FLOPs per step', f'{self.flops_per_step / 1e12:,.3g} TFLOP ({self.flops_per_chip / 1e12:,.3g} per chip)'))
    if self.roofline:
      r = self.roofline
      rows += [('roofline bound (not measured)',
                f'step >= {r["step_seconds"] * 1e3:,.1f} ms (FLOPs at the {r["peak_tflops"]:.0f} TFLOP/s bf16 peak)'),
               ('HBM traffic estimate', f'{r["hbm_traffic_seconds"] * 1e3:,.1f} ms (XLA\'s estimate of bytes accessed, '
                                        f'at {r["hbm_gbps"]:.0f} GB/s)'),
               ('samples/s bound', f'<= {r["samples_per_second"]:,.0f} ({r["samples_per_second_per_chip"]:,.1f} per chip)'),
               ('schedule bound', f'>= {r["schedule_hours"]:,.2f} h wall, {r["core_hours"]:,.1f} core-hours '
                                  f'({r["steps"]} steps)')]
    for c in self.collectives:
      where = (f'over {c["axes"]} (groups of {c["group_size"]}, within a slice)' if c['within_slice']
               else f'{c["axes"]} (groups of {c["group_size"]})')
      rows.append((f'collective {c["op"]}', f'{c["count"]} x {where}, {c["bytes"]:,} bytes'))
    rows.append(('compile', f'{self.compile_seconds:.0f} s'))
    width = max(len(k) for k, _ in rows)
    lines = [f'{k:<{width}}  {v}' for k, v in rows]
    lines += [f'note: {n}' for n in self.notes]
    if not self.fits:
      lines += ['DOES NOT FIT. Turn one of these knobs:'] + [f'  - {a}' for a in self.advice]
    return '\n'.join(lines)


def advice(config, per_chip: dict, mesh, chips: int, hbm: int) -> list:
  """Knobs that lower per-chip memory, the likeliest first."""
  states = per_chip.get('parameters', 0) + per_chip.get('optimizer', 0)
  activations = per_chip.get('temporaries', 0)
  tc = config.train
  # micro-batches divide the activations: enough of them for the room the states leave (a power of two)
  room = hbm - states - per_chip.get('batch', 0)
  factor = activations / room if room > 0 and activations else 2
  micro = tc.micro_batches * 2 ** max(1, math.ceil(math.log2(max(factor, 1.0))))
  tips = []
  if not config.model.remat:
    tips.append('--config.model.remat=True: recompute each block in the backward pass (activation memory '
                'falls to about one block per layer; ~1/3 more compute)')
  tips.append(f'--config.train.micro_batches={micro}: GradCache accumulation keeps the global '
              f'batch and every negative, holding activations for global_batch / micro_batches rows at a time')
  fsdp_tip = (f'--config.mesh.fsdp={min(chips, 2 * mesh.shape["fsdp"])}: shard parameters and optimizer state '
              f'over more chips (now {mesh.shape["fsdp"]})')
  if mesh.shape['fsdp'] < chips:
    if states >= activations:
      tips.insert(0, fsdp_tip)
    else:
      tips.append(fsdp_tip)
  tips.append(f'--config.train.global_batch={tc.global_batch // 2}: a smaller global batch (fewer negatives)')
  return tips


_IOTA_GROUPS = re.compile(r'replica_groups=\[(?P<shape>[\d,]+)\]<=\[(?P<dims>[\d,]+)\](?:T\((?P<perm>[\d,]+)\))?')
_LIST_GROUPS = re.compile(r'replica_groups=\{(?P<groups>(?:\{[\d,]*\},?)*)\}')
_PAIRS = re.compile(r'source_target_pairs=\{(?P<pairs>[\d,{}]*)\}')


def _ints(text: str) -> list[int]:
  return [int(x) for x in text.split(',') if x]


def _replica_groups(line: str, n: int) -> list[tuple[int, ...]]:
  """Device groups of one HLO collective, as positions in the program's device assignment."""
  if m := _IOTA_GROUPS.search(line):  # iota form: [G,S]<=[dims]T(perm)
    ids = np.arange(n).reshape(_ints(m['dims']))
    if m['perm']:
      ids = ids.transpose(_ints(m['perm']))
    return [tuple(g) for g in ids.reshape(_ints(m['shape'])).tolist()]
  if m := _LIST_GROUPS.search(line):
    groups = [tuple(_ints(g)) for g in re.findall(r'\{([\d,]*)\}', m['groups'])]
    return [g for g in groups if g] or [tuple(range(n))]
  if m := _PAIRS.search(line):
    return [tuple(_ints(pair)) for pair in re.findall(r'\{([\d,]*)\}', m['pairs'])]
  return [tuple(range(n))]


_DCN = re.compile(r'= \((?P<type>.*?), token\[\]\) send\(.*_xla_megascale_transfer_type="(?P<op>[A-Z_]+)"')


def collectives(hlo_text: str, mesh) -> list[dict]:
  """The compiled program's collectives, grouped by kind and device groups, with the mesh axes each spans.

  One slice: replica groups index the mesh's devices. Several slices: XLA:TPU compiles one program per
  slice, whose collectives (ICI) index that slice's devices, and moves data between slices (DCN) with
  host-transfer sends tagged ``_xla_megascale_transfer_type``; those are listed as ``dcn-...``.
  """
  flat = list(mesh.devices.flat)
  slice_of = np.array([getattr(d, 'slice_index', 0) for d in flat]).reshape(mesh.devices.shape)
  first = slice_of.flat[0]
  # positions of the first slice's devices (all of them with one slice), numbered in mesh order
  local = np.full(slice_of.shape, -1)
  n = int(np.sum(slice_of == first))
  local[slice_of == first] = np.arange(n)
  names = mesh.axis_names
  axis_groups = {}  # device groups of each subset of mesh axes, to name what a collective spans
  for mask in range(1, 2 ** len(names)):
    axes = tuple(a for i, a in enumerate(names) if mask >> i & 1)
    moved = np.moveaxis(local, [names.index(a) for a in axes], range(-len(axes), 0))
    groups = [g for g in moved.reshape(-1, math.prod(mesh.shape[a] for a in axes)).tolist() if -1 not in g]
    # the fewest axes win: with data=1, groups over data+fsdp are those over fsdp
    axis_groups.setdefault(frozenset(frozenset(g) for g in groups), '+'.join(axes))
  found = {}
  for m in filter(None, map(_DCN.search, hlo_text.splitlines())):
    key = ('dcn-' + m['op'].lower().replace('_', '-'), None)
    entry = found.setdefault(key, {'op': key[0], 'axes': 'across slices', 'count': 0, 'group_size': len(
        set(slice_of.flat)), 'within_slice': False, 'bytes': 0})
    entry['count'] += 1
    entry['bytes'] += max(sharding.array_bytes(m['type']), default=0)
  for op, _, size, line in sharding.hlo_collective_ops(hlo_text):
    groups = _replica_groups(line, n)
    if max(len(g) for g in groups) == 1:  # a collective over one device moves nothing
      continue
    key = (op, frozenset(frozenset(g) for g in groups))
    entry = found.setdefault(key, {'op': op, 'axes': axis_groups.get(key[1], 'other'), 'count': 0,
                                   'group_size': max(len(g) for g in groups), 'bytes': 0,
                                   # one slice: check each group; several: each program is one slice's
                                   'within_slice': n < len(flat) or all(
                                       len({slice_of.flat[i] for i in g}) == 1 for g in groups)})
    entry['count'] += 1
    entry['bytes'] += size
  return sorted(found.values(), key=lambda e: (e['op'], e['axes']))


def roofline(flops_per_chip: float, bytes_per_chip: float, chip: Chip, global_batch: int, chips: int,
             steps: int) -> dict:
  """Lower bound of the step time: the compiled program's FLOPs at the chip's bf16 peak. Beside it, XLA's
  estimate of HBM bytes accessed at full bandwidth (an estimate, so not part of the bound). Core-hours
  count TensorCores (big_vision's convention: v4-32 = 32 cores = 16 chips)."""
  step_s = flops_per_chip / chip.bf16_flops
  memory_s = bytes_per_chip / chip.hbm_bytes_per_s
  return {'peak_tflops': chip.bf16_flops / 1e12, 'hbm_gbps': chip.hbm_bytes_per_s / 1e9,
          'step_seconds': step_s, 'hbm_traffic_seconds': memory_s,
          'samples_per_second': global_batch / step_s, 'samples_per_second_per_chip': global_batch / step_s / chips,
          'steps': steps, 'schedule_hours': step_s * steps / 3600,
          'core_hours': step_s * steps / 3600 * chips * chip.cores}


def write_json(report: Report, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(report.to_json(), f, indent=1)
