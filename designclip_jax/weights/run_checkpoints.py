"""Orbax checkpoints of everything a run needs to continue exactly: model, optimizer (with its step
count), data-iterator position and the train step. Every process calls save/restore on the same
absolute path."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, 'checkpoints')),
                               options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def save(mngr: ocp.CheckpointManager, step: int, model_state, opt_state, meta: dict) -> None:
  mngr.save(step, args=ocp.args.Composite(model=ocp.args.StandardSave(model_state),
                                          optimizer=ocp.args.StandardSave(opt_state),
                                          meta=ocp.args.JsonSave(meta)), force=True)


def _abstract(state, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def restore(mngr: ocp.CheckpointManager, step: int, model_state, model_sharding, opt_state=None,
            opt_sharding=None):
  """Restore into the given shardings; ``opt_state=None`` restores the model only (for evaluation)."""
  items = {'model': ocp.args.StandardRestore(_abstract(model_state, model_sharding)),
           'meta': ocp.args.JsonRestore()}
  if opt_state is not None:
    items['optimizer'] = ocp.args.StandardRestore(_abstract(opt_state, opt_sharding))
  restored = mngr.restore(step, args=ocp.args.Composite(**items))
  return restored['model'], restored.get('optimizer') if opt_state is not None else None, restored['meta']
