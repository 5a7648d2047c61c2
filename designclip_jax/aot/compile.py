"""The config's real train step lowered from sharded shapes (nothing allocated) and compiled for a topology:
XLA's memory and cost analysis of the program a pod would run."""

from __future__ import annotations

import math
import os
import re
import time

import jax
import jax.numpy as jnp
from flax import nnx

from designclip_jax import sharding
from designclip_jax.aot.report import Report, advice, collectives, roofline
from designclip_jax.aot.topology import GIB, AotError, chip_of, host_memory_bytes, make_mesh, topology_devices
from designclip_jax.data import pipeline
from designclip_jax.data.classes import NUM_CLASSES
from designclip_jax.models import preset
from designclip_jax.train.step import jit_train_step, make_optimizer
from designclip_jax.weights import hf_format
from designclip_jax.weights.model_spec import ModelSpec

# XLA:TPU refuses a program that exceeds HBM at compile time, in one of two wordings: "... Used 20.51G of
# 15.48G hbm ..." (everything), or "... required for HLO temporaries (536.29G) exceeds available HBM (15.75G)"
_HBM_USED = re.compile(r'Used ([\d.]+)([KMGT]?) of ([\d.]+)([KMGT]?) hbm')
_HBM_TEMPORARIES = re.compile(r'required for HLO temporaries \(([\d.]+)([KMGT]?)\) exceeds available HBM '
                              r'\(([\d.]+)([KMGT]?)\)')
_UNITS = {'': 1, 'K': 2 ** 10, 'M': 2 ** 20, 'G': 2 ** 30, 'T': 2 ** 40}


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


def abstract_batch(spec: ModelSpec, global_batch: int, mesh) -> dict:
  """The training batch the data pipeline feeds (data.pipeline.batch_shapes), as sharded shapes."""
  shapes = pipeline.batch_shapes(global_batch, spec.clip.vision.image_size, spec.clip.text.context_length)
  placed = sharding.batch_sharding(mesh)
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=placed) for k, (shape, dtype) in shapes.items()}


def per_device_bytes(tree) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs (logical sizes, no layout padding)."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(tree) if hasattr(x, 'shape'))


def _hbm_exceeded(error: Exception):
  """('total' or 'temporaries', bytes needed, bytes available) from XLA:TPU's out-of-memory compile error,
  or None for any other error."""
  for kind, pattern in (('total', _HBM_USED), ('temporaries', _HBM_TEMPORARIES)):
    if match := pattern.search(str(error)):
      used, used_unit, capacity, capacity_unit = match.groups()
      return kind, float(used) * _UNITS[used_unit], float(capacity) * _UNITS[capacity_unit]
  return None


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return cost or {}


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
  step = jit_train_step(abstract_model, abstract_opt, mesh, lambdas, micro,
                        pixel_normalization=config.model.pixel_normalization)
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
      one_pass = jit_train_step(abstract_model, abstract_opt, mesh, lambdas, 1,
                                pixel_normalization=config.model.pixel_normalization)
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
