"""Orbax checkpoints of everything a run needs to continue exactly: model, optimizer (with its step
count) and the train step (the data stream is a function of the step). Every process calls
save/restore on the same absolute path, local or a bucket URL (gs://…)."""

from __future__ import annotations

import orbax.checkpoint as ocp
from etils import epath

from designclip_jax import sharding


def absolute(path) -> epath.Path:
  """``path`` as an epath: a local one made absolute (every process must name the same directory), a URL
  such as gs://bucket/run kept as given (os.path.abspath would turn it into a local ./gs:/bucket/run)."""
  path = epath.Path(path)
  return path if '://' in str(path) else path.absolute()


def manager(workdir, keep: int | None, *, read_only: bool = False) -> ocp.CheckpointManager:
  """``read_only`` for loading a run (eval, search): creates no directory, so a read-only mount works (Orbax's
  own read_only option would log a warning on every load)."""
  return ocp.CheckpointManager(absolute(workdir) / 'checkpoints',
                               options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only))


def step_dir(mngr: ocp.CheckpointManager, step: int) -> epath.Path:
  return epath.Path(mngr.directory) / str(step)


def save(mngr: ocp.CheckpointManager, step: int, model_state, opt_state, meta: dict) -> None:
  mngr.save(step, args=ocp.args.Composite(model=ocp.args.StandardSave(model_state),
                                          optimizer=ocp.args.StandardSave(opt_state),
                                          meta=ocp.args.JsonSave(meta)), force=True)


def restore(mngr: ocp.CheckpointManager, step: int, model_state, model_sharding, opt_state=None,
            opt_sharding=None):
  """Restore into the given shardings; ``opt_state=None`` restores the model only (for evaluation).
  ``meta`` is returned as saved (older runs also stored a data-iterator state there; it is not used)."""
  items = {'model': ocp.args.StandardRestore(sharding.with_shardings(model_state, model_sharding)),
           'meta': ocp.args.JsonRestore()}
  if opt_state is not None:
    items['optimizer'] = ocp.args.StandardRestore(sharding.with_shardings(opt_state, opt_sharding))
  restored = mngr.restore(step, args=ocp.args.Composite(**items))
  return restored['model'], restored.get('optimizer') if opt_state is not None else None, restored['meta']
