"""Device mesh, logical-axis rules and host-local -> global arrays: the only module that knows about
devices and processes (besides the CLI entry points that call jax.distributed.initialize)."""

from __future__ import annotations

import contextlib
import logging
import math
import re

import jax
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import NamedSharding, PartitionSpec as P

BATCH_AXES = ('data', 'fsdp')
# Activations: the models mark their batch dim with the logical axis 'batch' (layers.shard_batch); under
# activation_sharding it is split over both mesh axes and every other dim is kept whole, so FSDP shards
# parameters and optimizer state only, and never splits an activation along the model width.
ACTIVATION_RULES = (('batch', BATCH_AXES),)
# Logical parameter axes -> mesh axes. FSDP shards every matrix along its model-width ('embed') dim;
# other logical axes stay replicated. A dimension the mesh axis does not divide is replicated.
LOGICAL_RULES: dict[str, str | None] = {'embed': 'fsdp', 'mlp': None, 'heads': None, 'vocab': None,
                                        'joint': None, 'fusion': None}


def device_grid(data: int, fsdp: int, devices, slices: int = 1) -> np.ndarray:
  """Devices arranged (data, fsdp); -1 for data or fsdp means 'all remaining devices'.

  With ``slices > 1`` (several TPU slices joined by the data-center network, DCN) only data parallelism
  crosses slices: each slice holds data/slices whole rows of the grid, so FSDP's parameter all-gathers
  and gradient reduce-scatters stay on a slice's fast interconnect (ICI), as MaxText and big_vision build
  hybrid meshes. Slices are read from the devices' ``slice_index`` (TPU; also abstract devices from
  ``jax.experimental.topologies``), or are processes where devices have none (e.g. one process per GPU
  node).
  """
  n = len(devices)
  if slices < 1 or n % slices:
    raise ValueError(f'mesh.slices={slices} does not divide the {n} devices')
  if data == -1 and fsdp == -1:
    raise ValueError('mesh.data and mesh.fsdp cannot both be -1')
  if data == -1:
    data = n // fsdp
  if fsdp == -1:
    fsdp = n // data
  if data * fsdp != n:
    raise ValueError(f'mesh data={data} x fsdp={fsdp} does not use the {n} available devices exactly')
  if slices == 1:
    return mesh_utils.create_device_mesh((data, fsdp), devices, allow_split_physical_axes=True)
  if data % slices:
    raise ValueError(f'mesh.data={data} must be a multiple of mesh.slices={slices}: only data parallelism '
                     f'crosses slices (fsdp={fsdp} must fit in one slice of {n // slices} devices)')
  by_process = not hasattr(devices[0], 'slice_index')
  granules = {d.process_index if by_process else d.slice_index for d in devices}
  if len(granules) != slices:
    raise ValueError(f'mesh.slices={slices}, but the devices belong to {len(granules)} '
                     f'{"processes (they have no slice_index)" if by_process else "slices"}')
  return mesh_utils.create_hybrid_device_mesh((data // slices, fsdp), (slices, 1), devices,
                                              process_is_granule=by_process, allow_split_physical_axes=True)


def make_mesh(data: int, fsdp: int, devices=None, slices: int = 1) -> jax.sharding.Mesh:
  """A ('data', 'fsdp') mesh over ``devices`` (default: all; abstract TPU devices work too); see device_grid."""
  devices = list(devices) if devices is not None else jax.devices()
  return jax.sharding.Mesh(device_grid(data, fsdp, devices, slices), BATCH_AXES,
                           axis_types=(jax.sharding.AxisType.Auto,) * 2)


def _spec_for(logical: tuple, shape: tuple, mesh, rules) -> P:
  axes = []
  for name, dim in zip(logical, shape):
    mesh_axis = rules.get(name) if name else None
    if mesh_axis and dim % mesh.shape[mesh_axis]:
      logging.debug('dimension %d (%s) not divisible by mesh axis %s: replicated', dim, name, mesh_axis)
      mesh_axis = None
    axes.append(mesh_axis)
  return P(*axes)


def state_shardings(abstract_state, mesh, rules=None):
  """NamedSharding for every leaf of an NNX state, from its logical ``out_sharding`` metadata."""
  rules = LOGICAL_RULES if rules is None else rules

  def one(variable):
    value = variable.get_value() if hasattr(variable, 'get_value') else variable
    if not hasattr(value, 'shape'):  # an array-free node, e.g. optax.MaskedNode for a frozen tower's moments
      return variable
    logical = variable.get_metadata().get('out_sharding') if hasattr(variable, 'get_metadata') else None
    spec = _spec_for(logical, value.shape, mesh, rules) if logical else P()
    return variable.replace(NamedSharding(mesh, spec)) if hasattr(variable, 'replace') else NamedSharding(mesh, spec)

  return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


@contextlib.contextmanager
def activation_sharding(mesh):
  """Trace a model under this (inside ``jit``) to shard its activations over the batch axes only."""
  with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nnx.logical_axis_rules(ACTIVATION_RULES):
    yield


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def with_shardings(abstract_state, shardings):
  """A state of arrays or ShapeDtypeStructs -> ShapeDtypeStructs carrying the given shardings (restore and
  ahead-of-time compile targets; nothing allocated)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings)


def host_local_to_global(local_batch: dict, mesh) -> dict:
  """Host-local numpy batch (this process's rows) -> global jax.Arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


_COLLECTIVE = re.compile(r'= (?P<type>.+?) (?P<op>all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)'
                         r'(?P<start>-start)?\(')
_ARRAY = re.compile(r'\b(?P<dtype>pred|bf16|[suf]\d+)\[(?P<dims>[\d,]*)\]')
_PAIRED_STARTS = ('all-gather', 'collective-permute')  # their -start tuples hold operands beside results


def array_bytes(type_text: str) -> list[int]:
  """Bytes of each array in an HLO type: one array, or each element of a tuple."""
  return [math.prod(int(d) for d in m['dims'].split(',') if d)
          * (1 if m['dtype'] == 'pred' else max(1, int(m['dtype'].lstrip('bsuf')) // 8))
          for m in _ARRAY.finditer(type_text)]


def result_bytes(op: str, type_text: str, asynchronous: bool) -> int:
  """Bytes a collective delivers to each device: all its results (a combined all-reduce's tuple holds one
  per array). An asynchronous all-gather or collective-permute start's tuple lists its operands, then its
  results, then (a permute) two u32[] contexts: only the results count."""
  sizes = array_bytes(type_text)
  if not (asynchronous and op in _PAIRED_STARTS):
    return sum(sizes)
  if op == 'collective-permute':
    sizes = [size for size, m in zip(sizes, _ARRAY.finditer(type_text)) if not (m['dtype'] == 'u32' and not m['dims'])]
  return sum(sizes[len(sizes) // 2:])


def hlo_collective_ops(hlo_text: str) -> list[tuple[str, str, int, str]]:
  """(op, result type, result bytes per device, line) of every collective in a compiled program's HLO text; an
  asynchronous pair is listed once, at its ``-start``."""
  return [(m['op'], m['type'], result_bytes(m['op'], m['type'], bool(m['start'])), line)
          for line in hlo_text.splitlines() if (m := _COLLECTIVE.search(line))]


def hlo_collectives(hlo_text: str) -> list[tuple[str, str, int]]:
  """(op, result type, result bytes per device) of every collective in a compiled program's HLO text
  (``compiled.as_text()``): what a sharding actually costs in communication."""
  return [(op, type_text, size) for op, type_text, size, _ in hlo_collective_ops(hlo_text)]
