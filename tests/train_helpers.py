"""Shared by the training tests: a micro training config over the session's synthetic data set (small enough for
CI), a recorder of the batches each step saw, a SIGTERM sent before a chosen step, and gs:// served from a local
folder."""

import importlib
import os
import signal

import pytest
from etils import epath
from fsspec.implementations.local import LocalFileSystem

from designclip_jax import sharding
from designclip_jax.train import loop
from designclip_jax.train.config import base_config
from designclip_jax.weights import run_checkpoints

_GLOBAL_BATCH = sharding.host_local_to_global  # the real one, before any recorder wraps it
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def micro_config(data_dir, **train):
  c = base_config()
  c.model.preset = 'tiny'
  c.model.overrides = dict(vision_image_size=32, vision_patch_size=8, vision_layers=1, vision_width=64,
                           vision_heads=2, vision_mlp_dim=128, text_layers=1, text_width=64, text_heads=2,
                           text_mlp_dim=128, text_context_length=32, embed_dim=32)
  c.model.fusion_width = 32
  c.model.fusion_heads = 2
  c.model.pixel_normalization = 'sketch'
  c.data.dir = data_dir
  c.data.context_length = 32
  c.train.update({**dict(steps=8, global_batch=16, learning_rate=3e-3, warmup_steps=2, log_every=1,
                         checkpoint_every=4, keep_checkpoints=10), **train})
  c.eval.tasks = ()
  c.eval.batch_size = 32
  return c


def get_config(data_dir):
  """For the CLI: --config tests/train_helpers.py:DATA_DIR (then --config.x=y overrides as usual)."""
  return micro_config(data_dir)


class BatchRecorder:
  """Wraps sharding.host_local_to_global to record what each step saw, optionally altering one step."""

  def __init__(self, monkeypatch, on_call=None):
    self.seen, self.on_call = [], on_call
    original = _GLOBAL_BATCH

    def wrapped(local, mesh):
      index = len(self.seen)
      self.seen.append(local['record'].copy())
      if self.on_call:
        local = self.on_call(index, local)
      return original(local, mesh)

    monkeypatch.setattr(loop.sharding, 'host_local_to_global', wrapped)


def pretrained_checkpoint(kind, tmp_path, tokenizer):
  """A random transformers CLIP directory, or an OpenAI-format ResNet CLIP file, sized to the data."""
  if kind == 'hf':
    from tests.hf_reference import make_hf_clip
    path = str(tmp_path / 'hf')
    make_hf_clip(path, vocab_size=tokenizer.vocab_size, eos_token_id=tokenizer.eos_token_id, context_length=32,
                 image_size=32, patch_size=8)
    tokenizer.save(path)
    return path
  import torch
  from tests.openai_reference import make_openai_clip, write_open_clip_config
  ref = make_openai_clip(vision_layers=(1, 1, 1, 1), vision_width=8, image_resolution=32, context_length=32,
                         vocab_size=tokenizer.vocab_size, transformer_layers=1)
  os.makedirs(tmp_path / 'openai')
  torch.save(ref.state_dict(), str(tmp_path / 'openai' / 'RN-tiny.pt'))
  write_open_clip_config(tmp_path / 'openai', quick_gelu=True)  # a state dict does not name its activation
  tokenizer.save(str(tmp_path / 'openai'))  # tokenizer files sit beside the checkpoint file
  return str(tmp_path / 'openai' / 'RN-tiny.pt')


def sigterm_at(batch_index: int):
  """A BatchRecorder hook: SIGTERM this process as batch ``batch_index`` (0-based, of this call) is fed, so the
  run saves and stops after that step."""
  def preempt(index, local):
    if index == batch_index:
      os.kill(os.getpid(), signal.SIGTERM)  # the handler sets a flag; the loop saves and stops
    return local
  return preempt


class _FakeBucket(LocalFileSystem):
  """fsspec's gcs protocol served from a local folder (epath reaches gs:// through fsspec when TensorFlow is
  absent): what is written to gs://bucket/x lands in ``root``/bucket/x."""
  root = ''

  def __init__(self, *args, finalize_on_close=True, **kwargs):
    del finalize_on_close  # an option of the real gcsfs
    super().__init__(*args, **kwargs)

  @classmethod
  def _strip_protocol(cls, path):
    path = os.fspath(path)
    return os.path.join(cls.root, path[len('gs://'):]) if path.startswith('gs://') else super()._strip_protocol(path)


@pytest.fixture
def fake_bucket(tmp_path, monkeypatch):
  """gs:// mapped to tmp_path/bucket-root for epath, tensorboardX and Orbax; yields (root, Orbax's directories)."""
  import orbax.checkpoint as ocp
  from etils.epath import backend
  from tensorboardX import record_writer
  root = tmp_path / 'bucket-root'
  root.mkdir()
  monkeypatch.setattr(_FakeBucket, 'root', str(root))
  monkeypatch.setitem(importlib.import_module('fsspec.registry')._registry, 'gcs', _FakeBucket)
  type(backend.fsspec_backend)._get_filesystem.cache_clear()

  class TensorBoardToBucket:  # tensorboardX writes gs:// through google-cloud-storage; here through epath
    open = staticmethod(lambda path: epath.Path(path).open('wb'))
    directory_check = staticmethod(lambda path: epath.Path(path).mkdir(parents=True, exist_ok=True))

  monkeypatch.setitem(record_writer.REGISTERED_FACTORIES, 'gs', TensorBoardToBucket())
  orbax_dirs, real_manager = [], ocp.CheckpointManager

  def manager(directory, *args, **kwargs):  # Orbax writes arrays to gs:// with TensorStore's own GCS driver
    orbax_dirs.append(str(directory))
    url = str(directory).startswith('gs://')
    return real_manager(root / str(directory)[len('gs://'):] if url else directory, *args, **kwargs)

  monkeypatch.setattr(run_checkpoints.ocp, 'CheckpointManager', manager)
  monkeypatch.chdir(tmp_path)
  yield root, orbax_dirs
  type(backend.fsspec_backend)._get_filesystem.cache_clear()
  _FakeBucket.clear_instance_cache()


def train_cli(data_dir, workdir, *overrides) -> list:
  """The train CLI on micro_config (this file's get_config) over ``data_dir``."""
  import sys  # pylint: disable=import-outside-toplevel
  return [sys.executable, '-m', 'designclip_jax.train', '--config', f'{ROOT}/tests/train_helpers.py:{data_dir}',
          '--workdir', str(workdir), *overrides]


def sigterm_one_of_two(data_dir, workdir, logs, overrides, ready, *, timeout: float):
  """Two processes of one jax.distributed training job (2 CPU devices each; ``overrides(i)`` for process i),
  SIGTERM to process 1's session (it and its Grain worker) once ``ready(log texts)``; both waited for, within
  ``timeout`` s in all. Returns (exit statuses, outputs, seconds from the signal to the last exit)."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  from tests.processes import free_port  # pylint: disable=import-outside-toplevel
  port = free_port()
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
  procs = []
  try:
    for i in range(2):
      with open(logs[i], 'w') as log:
        procs.append(subprocess.Popen(
            train_cli(data_dir, workdir, *overrides(i), '--config.distributed.enabled=True',
                      f'--config.distributed.coordinator_address=127.0.0.1:{port}',
                      '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}'),
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    deadline = time.monotonic() + timeout
    while not ready([log.read_text() for log in logs]):
      assert time.monotonic() < deadline and all(p.poll() is None for p in procs), logs[0].read_text()[-3000:]
      time.sleep(0.1)
    os.killpg(procs[1].pid, signal.SIGTERM)
    signalled = time.monotonic()
    for p in procs:
      p.wait(timeout=max(1, deadline - time.monotonic()))
    stopped_after = time.monotonic() - signalled
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
  return [p.returncode for p in procs], [log.read_text() for log in logs], stopped_after
