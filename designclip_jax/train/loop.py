"""``train_and_evaluate``: the training program, readable top to bottom.

Set-up (data, model spec, mesh, sharded state from eval_shape, jitted step) → resume from the newest
checkpoint if one exists → loop (feed host-local slices as global arrays, step, check, log, save) →
final checkpoint → evaluation on the held-out split.

Every file goes through etils.epath, so the workdir (and the data set) may be a bucket URL (gs://…).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time

import jax
import numpy as np
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from designclip_jax import sharding
from designclip_jax.weights import hf_format
from designclip_jax.data import pipeline
from designclip_jax.data.prepare import ensure_dataset
from designclip_jax.weights import run_checkpoints
from designclip_jax.weights.model_spec import ModelSpec, spec_from_config
from designclip_jax.train.step import jit_train_step, init_state, make_optimizer


# The CLI's exit status after a preemption checkpoint (EX_TEMPFAIL in sysexits.h: "try again later"), so a
# scheduler can requeue the job on it; the rerun resumes from that checkpoint.
PREEMPTED_EXIT_CODE = 75


class NonFiniteLossError(FloatingPointError):
  pass


def maybe_initialize_distributed(cfg) -> None:
  """jax.distributed.initialize() when the config (or DESIGNCLIP_DISTRIBUTED=1) asks for it; with no
  coordinator given, JAX detects the cluster (Cloud TPU, SLURM, …) itself."""
  dist = cfg.distributed
  if not (dist.enabled or os.environ.get('DESIGNCLIP_DISTRIBUTED') == '1'):
    return
  if jax.distributed.is_initialized():
    return
  kwargs = {}
  if dist.coordinator_address:
    kwargs = dict(coordinator_address=dist.coordinator_address, num_processes=dist.num_processes,
                  process_id=dist.process_id)
    if dist.local_device_ids:
      kwargs['local_device_ids'] = list(dist.local_device_ids)
  jax.distributed.initialize(**kwargs)


class _Preemption:
  """A SIGTERM on any process stops every process after the same step, which they all save.

  Several processes: JAX's preemption service (started by jax.distributed.initialize, it catches SIGTERM)
  spreads the notice and agrees on a step, the largest step any process has reached + 1; each process asks
  at every step. Hosts that stopped on their own flags would diverge: one in the collective save, another
  in the next step, until the heartbeat timeout. One process: a SIGTERM handler sets a flag.
  """

  def __init__(self):
    self.requested = False
    self._agreed = jax.process_count() > 1
    if not self._agreed:
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    logging.warning('SIGTERM received: saving a checkpoint and stopping')
    self.requested = True

  def reached(self, step: int) -> bool:
    """Whether to save and stop after ``step``; every process must ask at every step."""
    if self._agreed:
      self.requested = multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def restore(self):
    if not self._agreed:
      signal.signal(signal.SIGTERM, self._previous)


class MetricWriter:
  """metrics.jsonl + TensorBoard, written by process 0 only. A local metrics.jsonl is appended to; a bucket
  object cannot be, so a URL workdir's file is rewritten whole at each write. TensorBoard writes gs:// itself
  (tensorboardX, with google-cloud-storage installed: the ``gcs`` extra)."""

  def __init__(self, workdir: epath.Path):
    self.active = jax.process_index() == 0
    if self.active:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self.path = workdir / 'metrics.jsonl'
      self.local = '://' not in str(workdir)
      self.lines = [] if self.local or not self.path.exists() else self.path.read_text().splitlines(keepends=True)
      self.jsonl = self.path.open('a') if self.local else None
      self.tb = SummaryWriter(str(workdir / 'tensorboard'))

  def write(self, step: int, metrics: dict) -> None:
    if not self.active:
      return
    line = json.dumps({'step': step, **{k: float(v) for k, v in metrics.items()}}) + '\n'
    if self.local:
      self.jsonl.write(line)
      self.jsonl.flush()
    else:
      self.lines.append(line)
      self.path.write_text(''.join(self.lines))
    for k, v in metrics.items():
      self.tb.add_scalar(k, float(v), step)

  def close(self):
    if self.active:
      if self.local:
        self.jsonl.close()
      self.tb.close()


def _check_finite(step: int, metrics: dict) -> dict:
  host = {k: float(v) for k, v in jax.device_get(metrics).items()}
  bad = {k: v for k, v in host.items() if not math.isfinite(v)}
  if bad:
    raise NonFiniteLossError(f'non-finite loss at step {step}: {bad}; the last good checkpoint is kept. '
                             'Lower the learning rate or check the input batch of this step.')
  return host


def _load_pretrained_towers(model_state, model_sharding, spec: ModelSpec):
  """Replace the randomly initialised towers by the checkpoint's weights, placed in their shardings."""
  abstract = nnx.eval_shape(lambda: spec.build().clip)
  params = hf_format.hf_to_params(hf_format.read_checkpoint(spec.pretrained)[1], abstract)
  pure = nnx.to_pure_dict(model_state)
  # only the towers come from the file (host arrays, the same on every process); the rest stays as
  # initialised: it may be sharded over devices of other processes, so it must not be fetched to host
  pure['clip'] = jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), params,
                              nnx.to_pure_dict(model_sharding)['clip'])
  nnx.replace_by_pure_dict(model_state, pure)
  return model_state


def _evaluate(config, step_fn, model_state, tokenizer, data_dir, table, spec, split, tasks, progress=True):
  from designclip_jax.eval import runner  # pylint: disable=import-outside-toplevel
  model = nnx.merge(step_fn.model_graph, model_state)
  return runner.evaluate(model.clip, tokenizer, data_dir, split, tuple(tasks), batch_size=config.eval.batch_size,
                         class_counts=table['train_counts'], template=config.eval.template,
                         pixel_normalization=spec.pixel_normalization, progress=progress)


def train_and_evaluate(config, workdir: str) -> dict:
  """Train per ``config`` in ``workdir`` (resuming if it holds checkpoints); return final metrics."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  maybe_initialize_distributed(config)
  workdir = run_checkpoints.absolute(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  tc, lc = config.train, config.loss
  lambdas = tuple(float(x) for x in lc.lambdas)

  # ---- data and model spec
  data_dir = ensure_dataset(config.data)
  pipeline.dataset_dir(data_dir)  # a folder that holds no ingested data set: say so before anything starts
  table = pipeline.class_table(data_dir)
  spec = spec_from_config(config.model, len(table['codes']), pipeline.tokenizer_dir(data_dir))
  if jax.process_index() == 0:
    spec.save(workdir)
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=1))
  tokenizer = spec.tokenizer()

  # ---- mesh, sharded state (shapes first, then allocation in place), jitted step
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, slices=config.mesh.slices)
  micro = tc.micro_batches
  if micro < 1 or tc.global_batch % (mesh.size * micro) or tc.global_batch % jax.process_count():
    raise ValueError(f'train.global_batch={tc.global_batch} must be divisible by the {mesh.size} devices '
                     f'x train.micro_batches={micro}, and by the {jax.process_count()} processes')
  tx = make_optimizer(tc)
  abstract_model, abstract_opt, model_state, opt_state = init_state(lambda: spec.build(tc.seed), tx, mesh)
  step_fn = jit_train_step(abstract_model, abstract_opt, mesh, lambdas, micro)
  if spec.pretrained:
    model_state = _load_pretrained_towers(model_state, step_fn.model_sharding, spec)

  # ---- resume by default
  mngr = run_checkpoints.manager(workdir, tc.keep_checkpoints)
  start = 0
  if mngr.latest_step() is not None:
    model_state, opt_state, meta = run_checkpoints.restore(mngr, mngr.latest_step(), model_state,
                                                         step_fn.model_sharding, opt_state, step_fn.opt_sharding)
    start = meta['step']
    if jax.process_index() == 0:
      print(f'resumed from step {start} ({run_checkpoints.step_dir(mngr, mngr.latest_step())})', flush=True)

  opts = pipeline.TrainOptions(
      image_size=spec.clip.vision.image_size, global_batch=tc.global_batch, seed=tc.seed,
      beta_sample=lc.beta_sample, beta_loss=lc.beta_loss, pair_strategy=config.data.pair_strategy,
      augment=config.data.augment, process_index=jax.process_index(), process_count=jax.process_count(),
      worker_count=config.data.worker_count, pixel_normalization=spec.pixel_normalization)
  # The stream is a function of the global step: resuming from the step, not from a saved iterator state (whose
  # shape depends on data.worker_count), lets a run resume with other worker or process counts.
  iterator = iter(pipeline.train_dataset(data_dir, opts, tokenizer, start_step=start))

  writer = MetricWriter(workdir)
  preemption = _Preemption()
  host_metrics, pending = {}, None
  bar = tqdm(total=tc.steps, initial=start, desc='train', unit='step', disable=jax.process_index() != 0)
  window_start, window_steps = time.perf_counter(), 0
  step = start
  try:
    while step < tc.steps and not preemption.requested:
      batch = sharding.host_local_to_global(next(iterator), mesh)
      model_state, opt_state, metrics = step_fn(model_state, opt_state, batch)
      if pending is not None:  # check the previous step while this one runs
        host_metrics = _check_finite(*pending)
      pending = (step, metrics)
      step += 1
      window_steps += 1
      bar.update(1)
      if step % tc.log_every == 0 or step == tc.steps:
        host_metrics = _check_finite(*pending)
        elapsed = time.perf_counter() - window_start
        host_metrics['examples_per_sec'] = window_steps * tc.global_batch / elapsed
        writer.write(step, host_metrics)
        bar.set_postfix({k: f'{v:.3g}' for k, v in host_metrics.items() if k != 'grad_norm'})
        window_start, window_steps = time.perf_counter(), 0
      if tc.eval_every and step % tc.eval_every == 0:  # every process embeds a share
        scores = _evaluate(config, step_fn, model_state, tokenizer, data_dir, table, spec,
                           config.eval.periodic_split, config.eval.periodic_tasks, progress=False)
        writer.write(step, {f'val/{k}': v for k, v in scores.items() if isinstance(v, float)})
      if preemption.reached(step) or step % tc.checkpoint_every == 0 or step == tc.steps:
        _check_finite(*pending)
        run_checkpoints.save(mngr, step, model_state, opt_state, {'step': step})
  finally:
    bar.close()
    iterator.close()  # stops Grain's worker processes, if any
    mngr.wait_until_finished()
    mngr.close()
    writer.close()
    preemption.restore()

  # a stop requested at the last step is no preemption: the run is finished, nothing to requeue
  result = {'step': step, 'preempted': preemption.requested and step < tc.steps, **host_metrics}
  if step >= tc.steps and config.eval.tasks:
    from designclip_jax.eval import runner  # pylint: disable=import-outside-toplevel
    scores = _evaluate(config, step_fn, model_state, tokenizer, data_dir, table, spec, config.eval.split,
                       config.eval.tasks)
    if jax.process_index() == 0:
      runner.print_table({'this run': scores})
      (workdir / f'eval_{config.eval.split}.json').write_text(json.dumps(scores, indent=1))
    result.update(scores)
  return result
