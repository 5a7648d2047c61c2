"""``train_and_evaluate``: the training program, readable top to bottom.

Set-up (data, model spec, mesh, sharded state from eval_shape, jitted step) → resume from the newest
checkpoint if one exists → loop (feed host-local slices as global arrays, step, check, log, save) →
final checkpoint → evaluation on the held-out split.
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

from designclip_jax import sharding
from designclip_jax.weights import hf_format
from designclip_jax.data import pipeline
from designclip_jax.data.prepare import ensure_dataset
from designclip_jax.weights import run_checkpoints
from designclip_jax.weights.model_spec import ModelSpec, spec_from_config
from designclip_jax.train.step import compile_step, init_state, make_optimizer


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
  """SIGTERM sets a flag; the loop then saves a checkpoint and exits cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    logging.warning('SIGTERM received: saving a checkpoint and stopping')
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


class MetricWriter:
  """metrics.jsonl + TensorBoard, written by process 0 only."""

  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    if self.active:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self.jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
      self.tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, metrics: dict) -> None:
    if not self.active:
      return
    self.jsonl.write(json.dumps({'step': step, **{k: float(v) for k, v in metrics.items()}}) + '\n')
    self.jsonl.flush()
    for k, v in metrics.items():
      self.tb.add_scalar(k, float(v), step)

  def close(self):
    if self.active:
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
  pure['clip'] = params
  shardings = nnx.to_pure_dict(model_sharding)
  pure = jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), pure, shardings)
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
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  tc, lc = config.train, config.loss
  lambdas = tuple(float(x) for x in lc.lambdas)

  # ---- data and model spec
  data_dir = ensure_dataset(config.data)
  table = pipeline.class_table(data_dir)
  spec = spec_from_config(config.model, len(table['codes']), pipeline.tokenizer_dir(data_dir))
  if jax.process_index() == 0:
    spec.save(workdir)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=1))
  tokenizer = spec.tokenizer()

  # ---- mesh, sharded state (shapes first, then allocation in place), jitted step
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  micro = tc.micro_batches
  if micro < 1 or tc.global_batch % (mesh.size * micro) or tc.global_batch % jax.process_count():
    raise ValueError(f'train.global_batch={tc.global_batch} must be divisible by the {mesh.size} devices '
                     f'x train.micro_batches={micro}, and by the {jax.process_count()} processes')
  tx = make_optimizer(tc)
  abstract_model, abstract_opt, model_state, opt_state = init_state(lambda: spec.build(tc.seed), tx, mesh)
  step_fn = compile_step(abstract_model, abstract_opt, mesh, lambdas, micro)
  if spec.pretrained:
    model_state = _load_pretrained_towers(model_state, step_fn.model_sharding, spec)

  # ---- resume by default
  mngr = run_checkpoints.manager(workdir, tc.keep_checkpoints)
  start, data_state = 0, None
  if mngr.latest_step() is not None:
    model_state, opt_state, meta = run_checkpoints.restore(mngr, mngr.latest_step(), model_state,
                                                         step_fn.model_sharding, opt_state, step_fn.opt_sharding)
    start, data_state = meta['step'], meta['data_iterator']
    logging.info('resumed from step %d', start)

  opts = pipeline.TrainOptions(
      image_size=spec.clip.vision.image_size, global_batch=tc.global_batch, seed=tc.seed,
      beta_sample=lc.beta_sample, beta_loss=lc.beta_loss, pair_strategy=config.data.pair_strategy,
      augment=config.data.augment, process_index=jax.process_index(), process_count=jax.process_count(),
      worker_count=config.data.worker_count, pixel_normalization=spec.pixel_normalization)
  iterator = iter(pipeline.train_dataset(data_dir, opts, tokenizer))
  if data_state is not None:
    iterator.set_state(data_state)

  writer = MetricWriter(workdir)
  preemption = _Preemption()
  host_metrics, pending = {}, None
  bar = tqdm(total=tc.steps, initial=start, desc='train', unit='step', disable=jax.process_index() != 0)
  window_start, window_steps = time.perf_counter(), 0
  step = start
  try:
    while step < tc.steps and not preemption.requested:
      batch = sharding.global_batch(next(iterator), mesh)
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
      if tc.eval_every and step % tc.eval_every == 0 and jax.process_count() == 1:
        scores = _evaluate(config, step_fn, model_state, tokenizer, data_dir, table, spec,
                           config.eval.periodic_split, config.eval.periodic_tasks, progress=False)
        writer.write(step, {f'val/{k}': v for k, v in scores.items() if isinstance(v, float)})
      if step % tc.checkpoint_every == 0 or step == tc.steps or preemption.requested:
        _check_finite(*pending)
        run_checkpoints.save(mngr, step, model_state, opt_state,
                           {'step': step, 'data_iterator': iterator.get_state()})
  finally:
    bar.close()
    mngr.wait_until_finished()
    mngr.close()
    writer.close()
    preemption.restore()

  result = {'step': step, **host_metrics}
  if step >= tc.steps and config.eval.tasks and jax.process_count() == 1:
    from designclip_jax.eval import runner  # pylint: disable=import-outside-toplevel
    scores = _evaluate(config, step_fn, model_state, tokenizer, data_dir, table, spec, config.eval.split,
                       config.eval.tasks)
    runner.print_table({'this run': scores})
    with open(os.path.join(workdir, f'eval_{config.eval.split}.json'), 'w') as f:
      json.dump(scores, f, indent=1)
    result.update(scores)
  return result
