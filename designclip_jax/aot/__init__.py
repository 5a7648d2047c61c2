"""Ahead-of-time compilation of a config's real train step for a Cloud TPU topology, without a TPU.

With libtpu installed (`pip install -e '.[aot]'`), ``jax.experimental.topologies`` describes a TPU slice
and ``jit(...).lower(...).compile()`` over a mesh of its abstract devices runs the real XLA:TPU compiler:
its memory and cost analysis are those of the program a pod would run. Every input is a
``ShapeDtypeStruct`` placed by a ``NamedSharding`` (shapes from ``nnx.eval_shape``): nothing is allocated.
``topology='cpu'`` compiles for this machine's own devices instead (no libtpu needed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time

import numpy as np

# libtpu would otherwise look for a GCE metadata server, and refuse to load while another process on this
# machine holds its lock file (any JAX process that probed for a TPU); compiling needs neither
os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')

import jax  # noqa: E402  (after the libtpu environment setting)
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from designclip_jax import sharding  # noqa: E402
from designclip_jax.data.classes import NUM_CLASSES  # noqa: E402
from designclip_jax.models import preset  # noqa: E402
from designclip_jax.train.step import jit_train_step, make_optimizer  # noqa: E402
from designclip_jax.weights import hf_format  # noqa: E402
from designclip_jax.weights.model_spec import ModelSpec  # noqa: E402

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  """Per-chip figures of a Cloud TPU generation."""
  name: str
  hbm_bytes: int
  bf16_flops: float  # peak dense bf16 FLOP/s
  hbm_bytes_per_s: float
  cores: int  # TensorCores per chip (Cloud TPU slice names such as v4-32 count cores)
  # two TensorCores driven as one device, as JAX runs v4 and v5p (without it the topology lists every core)
  megacore: bool = False


# Google Cloud TPU documentation, system architecture pages (cloud.google.com/tpu/docs/v4, /v5e, /v5p,
# /v6e): HBM capacity, HBM bandwidth and peak bf16 compute per chip.
CHIPS = {
    'v4': Chip('TPU v4', 32 * GIB, 275e12, 1228e9, 2, megacore=True),
    'v5e': Chip('TPU v5e', 16 * GIB, 197e12, 819e9, 1),
    'v5p': Chip('TPU v5p', 95 * GIB, 459e12, 2765e9, 2, megacore=True),
    'v6e': Chip('TPU v6e', 32 * GIB, 918e12, 1640e9, 1),
}
CPU = 'cpu'

# XLA:TPU refuses a program that exceeds HBM at compile time, in one of two wordings: "... Used 20.51G of
# 15.48G hbm ..." (everything), or "... required for HLO temporaries (536.29G) exceeds available HBM (15.75G)"
_HBM_USED = re.compile(r'Used ([\d.]+)([KMGT]?) of ([\d.]+)([KMGT]?) hbm')
_HBM_TEMPORARIES = re.compile(r'required for HLO temporaries \(([\d.]+)([KMGT]?)\) exceeds available HBM '
                              r'\(([\d.]+)([KMGT]?)\)')
_UNITS = {'': 1, 'K': 2 ** 10, 'M': 2 ** 20, 'G': 2 ** 30, 'T': 2 ** 40}


class AotError(ValueError):
  """A config that cannot be compiled as asked (bad topology, mesh or batch), with the reason."""


def chip_of(topology: str) -> Chip | None:
  """The chip of a topology name such as 'v5e:4x4' or 'v4:2x2x4'; None for 'cpu'."""
  if topology == CPU:
    return None
  generation = topology.split(':')[0].lower()
  if generation not in CHIPS:
    raise AotError(f"topology {topology!r}: unknown TPU generation {generation!r}; use one of "
                   f"{sorted(CHIPS)} as '<generation>:<shape>' (e.g. 'v5e:4x4', 'v4:2x2x4', 'v5p:2x2x2') or 'cpu'")
  return CHIPS[generation]


def topology_devices(topology: str, num_slices: int = 1) -> list:
  """Abstract TPU devices of a topology (no TPU needed, libtpu is), or this machine's CPU devices."""
  if topology == CPU:
    if num_slices != 1:
      raise AotError(f'mesh.slices={num_slices}: the cpu topology is a single slice')
    return jax.devices(CPU)
  chip = chip_of(topology)
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  try:
    return list(topologies.get_topology_desc(platform='tpu', topology_name=topology, num_slices=num_slices,
                                             chip_config_name='megacore' if chip.megacore else 'default').devices)
  except Exception as e:  # pylint: disable=broad-except  (libtpu absent, or a shape it does not know)
    raise AotError(f'cannot describe TPU topology {topology!r} (num_slices={num_slices}): {e}. '
                   "Is libtpu installed (pip install -e '.[aot]')? Shapes are chips per axis, e.g. v5e:4x4, "
                   'v4:2x2x4') from e


def host_memory_bytes() -> int:
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def model_spec(model_cfg) -> ModelSpec:
  """Tower shapes from model.init when that checkpoint is here, else from model.preset (+ overrides)."""
  if model_cfg.init and os.path.exists(model_cfg.init):
    clip = hf_format.load_config(model_cfg.init)
  else:
    clip = preset(model_cfg.preset, **dict(model_cfg.overrides))
  return ModelSpec(clip=clip, num_classes=NUM_CLASSES, tokenizer_dir='', head=model_cfg.head,
                   fusion_width=model_cfg.fusion_width, fusion_layers=model_cfg.fusion_layers,
                   fusion_heads=model_cfg.fusion_heads, dtype=model_cfg.dtype, remat=model_cfg.remat,
                   batchnorm=model_cfg.batchnorm)


def make_mesh(mesh_cfg, devices):
  try:
    return sharding.make_mesh(mesh_cfg.data, mesh_cfg.fsdp, devices=devices, slices=mesh_cfg.get('slices', 1))
  except ValueError as e:
    raise AotError(f'{e} (mesh.data={mesh_cfg.data}, mesh.fsdp={mesh_cfg.fsdp}, {len(devices)} chips)') from e


def abstract_batch(spec: ModelSpec, global_batch: int, mesh) -> dict:
  """The training batch the data pipeline feeds (data.pipeline.TrainTransform), as sharded shapes."""
  size, length = spec.clip.vision.image_size, spec.clip.text.context_length
  shapes = {'image': ((global_batch, size, size, 3), jnp.float32),
            'view': ((global_batch, size, size, 3), jnp.float32),
            'tokens': ((global_batch, length), jnp.int32), 'label': ((global_batch,), jnp.int32),
            'weight': ((global_batch,), jnp.float32), 'record': ((global_batch,), jnp.int32),
            'view_ids': ((global_batch, 2), jnp.int32)}
  placed = sharding.batch_sharding(mesh)
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=placed) for k, (shape, dtype) in shapes.items()}


def per_device_bytes(tree) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs (logical sizes, no layout padding)."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(tree) if hasattr(x, 'shape'))


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


def _hbm_exceeded(error: Exception):
  """('total' or 'temporaries', bytes needed, bytes available) from XLA:TPU's out-of-memory compile error,
  or None for any other error."""
  for kind, pattern in (('total', _HBM_USED), ('temporaries', _HBM_TEMPORARIES)):
    if match := pattern.search(str(error)):
      used, used_unit, capacity, capacity_unit = match.groups()
      return kind, float(used) * _UNITS[used_unit], float(capacity) * _UNITS[capacity_unit]
  return None


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
  for op, type_text, line in sharding.hlo_collective_ops(hlo_text):
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
    # the largest array: an asynchronous start's tuple holds its operand beside its result
    entry['bytes'] += max(sharding.array_bytes(type_text), default=0)
  return sorted(found.values(), key=lambda e: (e['op'], e['axes']))


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return cost or {}


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


def compile_config(config, topology: str | None = None, config_name: str = '') -> Report:
  """Compile ``config``'s train step for ``topology`` (default: ``config.hardware``) and report per chip."""
  topology = topology or config.get('hardware', '')
  if not topology:
    raise AotError('no topology: pass --topology (e.g. v5e:4x4, v4:2x2x4, cpu) or set config.hardware')
  chip = chip_of(topology)
  devices = topology_devices(topology, config.mesh.get('slices', 1))
  mesh = make_mesh(config.mesh, devices)
  tc = config.train
  micro, n = tc.micro_batches, tc.global_batch
  if micro < 1 or n % (mesh.size * micro):
    raise AotError(f'train.global_batch={n} must be divisible by the {mesh.size} chips x '
                   f'train.micro_batches={micro}')
  lambdas = tuple(float(x) for x in config.loss.lambdas)
  spec = model_spec(config.model)
  tx = make_optimizer(tc)
  abstract_model = nnx.eval_shape(lambda: spec.build(tc.seed))
  abstract_opt = nnx.eval_shape(lambda: nnx.Optimizer(spec.build(tc.seed), tx, wrt=nnx.Param))
  step = jit_train_step(abstract_model, abstract_opt, mesh, lambdas, micro)
  model_state = sharding.with_shardings(nnx.state(abstract_model), step.model_sharding)
  opt_state = sharding.with_shardings(nnx.state(abstract_opt), step.opt_sharding)
  batch = abstract_batch(spec, n, mesh)
  per_chip = {'parameters': per_device_bytes(model_state), 'optimizer': per_device_bytes(opt_state),
              'batch': per_device_bytes(batch)}
  hbm = chip.hbm_bytes if chip else host_memory_bytes() // len(devices)
  notes = []
  if config.model.init and not os.path.exists(config.model.init):
    # the checkpoint's own shapes are unknown here: a preset that differs from it (RN101 under an RN50
    # preset) would be checked instead, so say which shapes were compiled
    notes.append(f'model.init={config.model.init} is not on this machine: compiled the {config.model.preset} '
                 'preset shapes instead (pass the checkpoint path to check its own)')
  start = time.perf_counter()
  lowered = step.fn.lower(model_state, opt_state, batch)
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except
    exceeded = _hbm_exceeded(e)
    if exceeded is None:
      raise
    kind, needed, available = exceeded
    per_chip[kind] = int(needed)
    if kind == 'temporaries':
      per_chip['total'] = int(needed) + per_chip['parameters'] + per_chip['optimizer'] + per_chip['batch']
    notes.append(f'XLA:TPU refused the program at compile time: {kind} {needed / GIB:,.2f} GiB per chip, '
                 f'{available / GIB:.2f} GiB available')
    compiled = None
  seconds = time.perf_counter() - start
  flops = bytes_accessed = None
  found = []
  if compiled is not None:
    mem = compiled.memory_analysis()
    per_chip['arguments'] = int(mem.argument_size_in_bytes)  # XLA's, including TPU layout padding
    per_chip['temporaries'] = int(mem.temp_size_in_bytes)
    per_chip['outputs'] = int(mem.output_size_in_bytes - mem.alias_size_in_bytes)  # donated state is aliased
    per_chip['total'] = per_chip['arguments'] + per_chip['temporaries'] + per_chip['outputs']
    cost = _cost(compiled)
    flops, bytes_accessed = cost.get('flops'), cost.get('bytes accessed')
    found = collectives(compiled.as_text(), mesh)
    if micro > 1:
      # XLA's cost analysis counts a while loop's body once, whatever its trip count, so the micro-batch
      # loops are undercounted: use the one-pass step's FLOPs (lowered, not compiled), which GradCache
      # exceeds by one extra forward pass of the towers
      one_pass = jit_train_step(abstract_model, abstract_opt, mesh, lambdas, 1)
      flops = _cost(one_pass.fn.lower(model_state, opt_state, batch)).get('flops', flops)
      notes.append(f'train.micro_batches={micro}: FLOPs are those of the single-pass step (a lower bound; '
                   'GradCache adds one forward pass of the towers)')
  fits = per_chip['total'] <= hbm
  report_roofline = None
  if flops is not None and chip is not None:
    report_roofline = roofline(flops, bytes_accessed or 0.0, chip, n, mesh.size, tc.steps)
  return Report(config_name=config_name, topology=topology, chips=mesh.size, mesh=dict(mesh.shape),
                global_batch=n, micro_batches=micro,
                model=config.model.preset if not config.model.init else os.path.basename(config.model.init.rstrip('/')),
                dtype=config.model.dtype, remat=bool(config.model.remat), hbm_bytes_per_chip=int(hbm),
                per_chip_bytes=per_chip, fits=bool(fits),
                flops_per_step=None if flops is None else float(flops) * mesh.size,
                flops_per_chip=None if flops is None else float(flops),
                bytes_accessed_per_chip=None if bytes_accessed is None else float(bytes_accessed),
                roofline=report_roofline, advice=[] if fits else advice(config, per_chip, mesh, mesh.size, hbm),
                notes=notes, compile_seconds=seconds, slices=config.mesh.get('slices', 1), collectives=found)


def write_json(report: Report, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(report.to_json(), f, indent=1)


