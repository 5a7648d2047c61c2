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
from flax import nnx
from jax.experimental import multihost_utils

from designclip_jax import provenance, sharding
from designclip_jax.data import pipeline
from designclip_jax.data.prepare import ensure_dataset
from designclip_jax.train import monitor
from designclip_jax.train.monitor import MetricWriter
from designclip_jax.train.step import jit_train_step, init_state, make_optimizer
from designclip_jax.weights import hf_format, run_checkpoints
from designclip_jax.weights.model_spec import ModelSpec, start_from_config


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
  """A SIGTERM on any process stops every process at the same point: after the same step, which they all save,
  or before the same batch of an evaluation (the step is saved; the evaluation is not finished).

  Several processes: JAX's preemption service (started by jax.distributed.initialize, it catches SIGTERM)
  spreads the notice and agrees on a sync point, the largest count of asks any process has reached + 1; every
  process asks at the same points (after each train step and before each evaluation batch), so counts agree.
  Hosts that stopped on their own flags would diverge: one in the collective save, another in the next step,
  until the heartbeat timeout. One process: a SIGTERM handler sets a flag.
  """

  def __init__(self):
    self.requested = False
    self._agreed = jax.process_count() > 1
    self._asks = 0
    if not self._agreed:
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    logging.warning('SIGTERM received: saving a checkpoint and stopping')
    self.requested = True

  def reached(self) -> bool:
    """Whether to stop now; every process must ask at the same points."""
    if self._agreed and not self.requested:
      self._asks += 1
      self.requested = multihost_utils.reached_preemption_sync_point(self._asks)
    return self.requested

  def restore(self):
    if not self._agreed:
      signal.signal(signal.SIGTERM, self._previous)


def _check_finite(step: int, metrics: dict) -> dict:
  host = {k: float(v) for k, v in jax.device_get(metrics).items()}
  bad = {k: v for k, v in host.items() if not math.isfinite(v)}
  if bad:
    raise NonFiniteLossError(f'non-finite loss at step {step}: {bad}; the last good checkpoint is kept. '
                             'Lower the learning rate or check the input batch of this step.')
  return host


def _load_pretrained_towers(model_state, model_sharding, spec: ModelSpec, tensors: dict):
  """Replace the randomly initialised towers by the checkpoint's tensors, placed in their shardings."""
  abstract = nnx.eval_shape(lambda: spec.build().clip)
  params = hf_format.hf_to_params(tensors, abstract)
  pure = nnx.to_pure_dict(model_state)
  # only the towers come from the file (host arrays, the same on every process); the rest stays as
  # initialised: it may be sharded over devices of other processes, so it must not be fetched to host
  pure['clip'] = jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), params,
                              nnx.to_pure_dict(model_sharding)['clip'])
  nnx.replace_by_pure_dict(model_state, pure)
  return model_state


def _step_flops(step_fn, abstract_model, abstract_opt, mesh, lambdas, micro, model_state, opt_state, batch):
  """FLOPs per device of one train step, from XLA's analysis of the compiled step (compiled here once; the
  step's first call finds it in JAX's cache). With micro-batches XLA counts a loop body once, so the single-pass
  step's FLOPs are used, as the AOT report does (a lower bound: GradCache adds a forward pass)."""
  if micro > 1:
    single = jit_train_step(abstract_model, abstract_opt, mesh, lambdas, 1,
                            pixel_normalization=step_fn.pixel_normalization)
    return monitor.compiled_flops(single.fn.lower(model_state, opt_state, batch))
  return monitor.compiled_flops(step_fn.fn.lower(model_state, opt_state, batch).compile())


class _Run:
  """The run's provenance.json: one entry per start of the run (its code, config, data set fingerprint, the step
  it resumed from, what it can measure), written by process 0."""

  def __init__(self, workdir, record: dict):
    self.path, self.record = workdir / 'provenance.json', record
    self.starts = json.loads(self.path.read_text())['starts'] if self.path.exists() else []

  def write(self, **extra) -> None:
    self.record.update(extra)
    if jax.process_index() == 0:
      self.path.write_text(json.dumps({'starts': self.starts + [self.record]}, indent=1))


def train_and_evaluate(config, workdir: str) -> dict:
  """Train per ``config`` in ``workdir`` (resuming if it holds checkpoints); return final metrics."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  from designclip_jax.eval import runner  # pylint: disable=import-outside-toplevel
  from designclip_jax.eval.embed import EmbeddingInterrupted  # pylint: disable=import-outside-toplevel
  maybe_initialize_distributed(config)
  workdir = run_checkpoints.absolute(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  tc, lc = config.train, config.loss
  lambdas = tuple(float(x) for x in lc.lambdas)

  # ---- data; every host runs the same code, config and data, or all stop with one line naming the odd one
  data_dir = ensure_dataset(config.data)
  pipeline.dataset_dir(data_dir)  # a folder that holds no ingested data set: say so before anything starts
  table = pipeline.label_table(data_dir, config.data.label)  # the classes of the run's label scheme
  run = _Run(workdir, provenance.record(json.loads(config.to_json_best_effort()), data_dir))
  provenance.check_hosts_agree(run.record['code'], run.record['config'], run.record['data']['fingerprint'])

  # ---- model: a new run reads model.init (local or in a bucket) once and keeps all it needs in the workdir;
  # a resumed run reads only its workdir
  mngr = run_checkpoints.manager(workdir, tc.keep_checkpoints)
  resuming = mngr.latest_step() is not None
  if resuming:
    spec = ModelSpec.load(workdir).resumed_with(config.model, len(table['codes']), config.data.label)
    tokenizer, init_tensors = spec.tokenizer(workdir), None
  else:
    spec, tokenizer, init_tensors = start_from_config(config.model, len(table['codes']),
                                                      pipeline.tokenizer_dir(data_dir), config.data.label)
  if jax.process_index() == 0:
    spec.save(workdir, None if resuming else tokenizer)
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=1))

  # ---- mesh, sharded state (shapes first, then allocation in place), jitted step
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, slices=config.mesh.slices)
  micro = tc.micro_batches
  if micro < 1 or tc.global_batch % (mesh.size * micro) or tc.global_batch % jax.process_count():
    raise ValueError(f'train.global_batch={tc.global_batch} must be divisible by the {mesh.size} devices '
                     f'x train.micro_batches={micro}, and by the {jax.process_count()} processes')
  tx = make_optimizer(tc)
  abstract_model, abstract_opt, model_state, opt_state = init_state(lambda: spec.build(tc.seed), tx, mesh)
  step_fn = jit_train_step(abstract_model, abstract_opt, mesh, lambdas, micro,
                           pixel_normalization=spec.pixel_normalization, mask_same_family=lc.mask_same_family)
  if init_tensors is not None:
    model_state = _load_pretrained_towers(model_state, step_fn.model_sharding, spec, init_tensors)
    del init_tensors

  # ---- resume by default
  start = 0
  if resuming:
    model_state, opt_state, meta = run_checkpoints.restore(mngr, mngr.latest_step(), model_state,
                                                         step_fn.model_sharding, opt_state, step_fn.opt_sharding)
    start = meta['step']
    if jax.process_index() == 0:
      print(f'resumed from step {start} ({run_checkpoints.step_dir(mngr, mngr.latest_step())})', flush=True)
  run.write(resumed_from=start)

  opts = pipeline.TrainOptions(
      image_size=spec.clip.vision.image_size, global_batch=tc.global_batch, seed=tc.seed,
      beta_sample=lc.beta_sample, beta_loss=lc.beta_loss, pair_strategy=config.data.pair_strategy,
      label=config.data.label,
      augment=config.data.augment, process_index=jax.process_index(), process_count=jax.process_count(),
      worker_count=config.data.worker_count, read_threads=config.data.read_threads)
  # The stream is a function of the global step: resuming from the step, not from a saved iterator state (whose
  # shape depends on data.worker_count), lets a run resume with other worker or process counts.
  iterator = iter(pipeline.train_dataset(data_dir, opts, tokenizer, start_step=start))

  preemption = _Preemption()

  def evaluate(split, tasks, progress=True):  # every process embeds a share; a preemption notice stops it
    model = nnx.merge(step_fn.model_graph, model_state)
    return runner.evaluate(model.clip, tokenizer, data_dir, split, tuple(tasks), batch_size=config.eval.batch_size,
                           class_counts=table['train_counts'], label=config.data.label, template=config.eval.template,
                           pixel_normalization=spec.pixel_normalization, progress=progress,
                           interrupt=preemption.reached)

  writer = MetricWriter(workdir, start)
  timer, throughput = monitor.StepTimer(), None
  profiler = monitor.Profiler(tc.profile_steps, workdir / 'tensorboard')
  logged, pending, stopped = {}, None, False
  bar = tqdm(total=tc.steps, initial=start, desc='train', unit='step', disable=jax.process_index() != 0)
  step = start
  try:
    try:
      while step < tc.steps and not stopped:
        began = time.perf_counter()
        local = next(iterator)
        waited = time.perf_counter() - began
        batch = sharding.host_local_to_global(local, mesh)
        if throughput is None:  # once: what this run can measure, and the compiled step's FLOPs
          throughput = monitor.Throughput(_step_flops(step_fn, abstract_model, abstract_opt, mesh, lambdas, micro,
                                                      model_state, opt_state, batch), tc.global_batch)
          run.write(performance=throughput.describe())
          if jax.process_index() == 0:
            print(f'per step: {throughput.summary()}', flush=True)
          began = time.perf_counter() - waited  # compiling is not a step
        profiler.before(step + 1)
        model_state, opt_state, metrics = step_fn(model_state, opt_state, batch)
        profiler.after(step + 1, metrics)
        if pending is not None:  # check the previous step while this one runs
          _check_finite(*pending)
        pending = (step, metrics)
        step += 1
        bar.update(1)
        line, per_host = {}, None
        log_now = step % tc.log_every == 0 or step == tc.steps
        if log_now:
          line = _check_finite(*pending)  # waits for this step: its time is complete
        timer.add(waited, time.perf_counter() - began)
        if log_now:
          perf, per_host = throughput.metrics(*timer.take())
          line.update(perf)
          logged = line
          bar.set_postfix({k: f'{v:.3g}' for k, v in line.items() if k in ('loss', 'examples_per_sec')})
        stopped = preemption.reached()  # every process, after every step
        if tc.eval_every and step % tc.eval_every == 0 and not stopped:
          if jax.process_index() == 0:
            bar.write(f'step {step}: evaluating on {config.eval.periodic_split} ({", ".join(config.eval.periodic_tasks)})')
          try:
            scores = evaluate(config.eval.periodic_split, config.eval.periodic_tasks, progress=False)
            line.update({f'val/{k}': v for k, v in scores.items() if isinstance(v, float)})
          except EmbeddingInterrupted:
            stopped = True
        if line:
          writer.write(step, line, per_host)
        if stopped or step % tc.checkpoint_every == 0 or step == tc.steps:
          _check_finite(*pending)
          run_checkpoints.save(mngr, step, model_state, opt_state, {'step': step})
    finally:
      bar.close()
      profiler.stop()
      iterator.close()  # stops Grain's worker processes, if any
      mngr.wait_until_finished()
      mngr.close()
      writer.close()

    # a stop requested at the last step is no preemption: the run is finished, nothing to requeue
    result = {'step': step, 'preempted': stopped and step < tc.steps, **logged}
    if step >= tc.steps and config.eval.tasks:
      try:
        scores = evaluate(config.eval.split, config.eval.tasks)
      except EmbeddingInterrupted:  # requeued, the run finds its last step and evaluates again
        return {**result, 'preempted': True}
      if jax.process_index() == 0:
        runner.print_table({'this run': scores})
        (workdir / f'eval_{config.eval.split}.json').write_text(
            json.dumps({**scores, 'provenance': run.record}, indent=1))
      result.update(scores)
    return result
  finally:
    preemption.restore()
