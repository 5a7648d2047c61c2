"""Device mesh, logical-axis rules and host-local -> global arrays: the only module that knows about
devices and processes (besides the CLI entry points that call jax.distributed.initialize)."""

from __future__ import annotations

import logging

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

BATCH_AXES = ('data', 'fsdp')
# Logical parameter axes -> mesh axes. FSDP shards every matrix along its model-width ('embed') dim;
# other logical axes stay replicated. A dimension the mesh axis does not divide is replicated.
LOGICAL_RULES: dict[str, str | None] = {'embed': 'fsdp', 'mlp': None, 'heads': None, 'vocab': None,
                                        'joint': None, 'fusion': None}


def make_mesh(data: int, fsdp: int, devices=None) -> jax.sharding.Mesh:
  """A ('data', 'fsdp') mesh; -1 for one axis means 'all remaining devices'."""
  devices = devices if devices is not None else jax.devices()
  n = len(devices)
  if data == -1:
    data = n // fsdp
  if fsdp == -1:
    fsdp = n // data
  if data * fsdp != n:
    raise ValueError(f'mesh data={data} x fsdp={fsdp} does not use the {n} available devices exactly')
  return jax.make_mesh((data, fsdp), BATCH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2,
                       devices=devices)


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


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict, mesh) -> dict:
  """Host-local numpy batch (this process's rows) -> global jax.Arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
