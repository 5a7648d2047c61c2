"""What a training run reports about itself: metrics.jsonl and TensorBoard, the time each host spends per step
(waiting for data, in all), MFU from the compiled step's FLOPs, device memory peaks, and jax.profiler traces of
chosen steps."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

import jax
import numpy as np
from etils import epath

from designclip_jax import paths
from designclip_jax.accelerators import chip_of_device

GIB = 2 ** 30


class MetricWriter:
  """metrics.jsonl + TensorBoard, written by process 0 only; one line per step.

  A run resumed from step N drops what a killed attempt logged after N (those steps run again), from
  metrics.jsonl and, through TensorBoard's purge step, from TensorBoard. A local metrics.jsonl is appended to; a
  bucket object cannot be, so a URL workdir's file is rewritten whole at each write. TensorBoard writes gs://
  itself (tensorboardX, with google-cloud-storage installed: the ``gcs`` extra)."""

  def __init__(self, workdir: epath.Path, resumed_step: int):
    self.active = jax.process_index() == 0
    if not self.active:
      return
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    self.path = workdir / 'metrics.jsonl'
    self.local = not paths.is_url(workdir)
    old = self.path.read_text().splitlines(keepends=True) if self.path.exists() else []
    self.lines = [line for line in old if _logged_step(line) <= resumed_step]
    if len(self.lines) != len(old):
      self.path.write_text(''.join(self.lines))
    self.jsonl = self.path.open('a') if self.local else None
    self.tb = SummaryWriter(str(workdir / 'tensorboard'), purge_step=resumed_step + 1)

  def write(self, step: int, metrics: dict, per_host: dict | None = None) -> None:
    """``metrics``: scalars; ``per_host``: {name: [one value per process]} (TensorBoard: host{i}/name)."""
    if not self.active:
      return
    entry = {'step': step, **{k: float(v) for k, v in metrics.items()}}
    if per_host:
      entry['hosts'] = {k: [float(x) for x in v] for k, v in per_host.items()}
    line = json.dumps(entry) + '\n'
    if self.local:
      self.jsonl.write(line)
      self.jsonl.flush()
    else:
      self.lines.append(line)
      self.path.write_text(''.join(self.lines))
    for k, v in metrics.items():
      self.tb.add_scalar(k, float(v), step)
    for k, values in (per_host or {}).items():
      for host, v in enumerate(values):
        self.tb.add_scalar(f'host{host}/{k}', float(v), step)

  def close(self):
    if self.active:
      if self.local:
        self.jsonl.close()
      self.tb.close()


def _logged_step(line: str) -> float:
  """The step of a metrics.jsonl line; infinity for a line a killed process left unfinished (dropped)."""
  try:
    return json.loads(line)['step']
  except (ValueError, KeyError, TypeError):
    return float('inf')


def compiled_flops(compiled) -> float | None:
  """FLOPs per device of a compiled program, from XLA's cost analysis (the AOT report's count); None where the
  backend gives none."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops']) if cost and cost.get('flops') else None


def device_memory_peak() -> int | None:
  """The largest peak of bytes in use among this process's devices, from the runtime's allocator
  (``Device.memory_stats``); None where the backend keeps no statistics (CPU)."""
  peaks = [(d.memory_stats() or {}).get('peak_bytes_in_use') for d in jax.local_devices()]
  peaks = [p for p in peaks if p is not None]
  return max(peaks) if peaks else None


class StepTimer:
  """This host's wall time per training step over a logging window, and the part of it spent waiting for the
  input pipeline. Only the steps themselves are timed: evaluation, checkpoints and logging are not, so
  examples/s is the training rate."""

  def __init__(self):
    self.steps, self.waiting, self.total = 0, 0.0, 0.0

  def add(self, waiting: float, total: float) -> None:
    self.steps += 1
    self.waiting += waiting
    self.total += total

  def take(self) -> tuple[float, float]:
    """(seconds per step, seconds waiting for data per step) of the window, which starts anew."""
    result = (self.total / self.steps, self.waiting / self.steps)
    self.steps, self.waiting, self.total = 0, 0.0, 0.0
    return result


class Throughput:
  """Per-step performance metrics of a window: this process's own, and every host's (one all-gather per log)."""

  def __init__(self, flops_per_device: float | None, global_batch: int):
    self.flops, self.global_batch = flops_per_device, global_batch
    self.chip = chip_of_device(jax.devices()[0])
    self.memory_known = device_memory_peak() is not None

  def describe(self) -> dict:
    """What the run can and cannot measure, for its provenance record and its first log line."""
    kind = jax.devices()[0].device_kind
    return {'flops_per_device_per_step': self.flops,
            'peak_flops_per_device': self.chip.bf16_flops if self.chip else None,
            'mfu': 'measured' if self.chip and self.flops else f'not computed: no peak FLOP/s known for {kind!r}',
            'device_memory_peak': 'measured' if self.memory_known else
                                  f'not available: {kind!r} devices keep no memory statistics'}

  def summary(self) -> str:
    """One line for the log: what each logged step will report."""
    d = self.describe()
    flops = f'{self.flops:.4g} FLOPs per device per step (compiled step)' if self.flops else 'FLOPs unknown'
    mfu = (f'MFU against {self.chip.name} bf16 peak {self.chip.bf16_flops / 1e12:g} TFLOP/s' if d['mfu'] == 'measured'
           else f'MFU {d["mfu"]}')
    memory = 'device memory peak measured' if self.memory_known else f'device memory peak {d["device_memory_peak"]}'
    return f'{flops}; {mfu}; {memory}'

  def metrics(self, step_seconds: float, wait_seconds: float) -> tuple[dict, dict | None]:
    """(scalars for process 0's line, per-host lists or None with one process)."""
    memory = device_memory_peak()
    out = {'examples_per_sec': self.global_batch / step_seconds, 'step_time_s': step_seconds,
           'data_wait_s': wait_seconds}
    if self.flops:
      out['tflops_per_device'] = self.flops / step_seconds / 1e12
      if self.chip:
        out['mfu'] = self.flops / step_seconds / self.chip.bf16_flops
    if jax.process_count() == 1:
      if memory is not None:
        out['device_memory_peak_gib'] = memory / GIB
      return out, None
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    mine = np.array([step_seconds, wait_seconds, -1.0 if memory is None else memory / GIB], np.float32)
    hosts = np.asarray(multihost_utils.process_allgather(mine))
    per_host = {'step_time_s': hosts[:, 0], 'data_wait_s': hosts[:, 1]}
    if memory is not None:
      per_host['device_memory_peak_gib'] = hosts[:, 2]
      out['device_memory_peak_gib'] = float(hosts[:, 2].max())
    out['data_wait_s_max'] = float(hosts[:, 1].max())  # the slowest feeder sets the pace
    return out, per_host


class Profiler:
  """jax.profiler traces of the chosen steps (1-based), consecutive steps in one trace, into the workdir's
  TensorBoard folder, whose Profile tab reads plugins/profile/. Every host traces itself. A bucket workdir: the
  trace is written locally, then copied up."""

  def __init__(self, steps, tensorboard_dir: epath.Path):
    self.steps, self.destination = {int(s) for s in steps}, tensorboard_dir
    self.local = None

  def before(self, step: int) -> None:
    if step in self.steps and self.local is None:
      self.local = (tempfile.mkdtemp(prefix='designclip-trace-') if paths.is_url(self.destination)
                    else os.fspath(self.destination))
      jax.profiler.start_trace(self.local)

  def after(self, step: int, outputs) -> None:
    if self.local is not None and step + 1 not in self.steps:
      jax.block_until_ready(outputs)  # the traced steps' device work, not only their dispatch
      self.stop()

  def stop(self) -> None:
    if self.local is None:
      return
    jax.profiler.stop_trace()
    if paths.is_url(self.destination):
      for root, _, files in os.walk(self.local):
        for name in files:
          target = self.destination / os.path.relpath(os.path.join(root, name), self.local)
          target.parent.mkdir(parents=True, exist_ok=True)
          epath.Path(root, name).copy(target, overwrite=True)
      shutil.rmtree(self.local, ignore_errors=True)
    logging.info('profile of steps %s written to %s', sorted(self.steps), self.destination)
    self.local = None
