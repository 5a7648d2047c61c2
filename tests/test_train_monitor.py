"""What a run reports and how periodic work stays out of training's way (issue 21): one metrics line per step
after a crash and resume; a SIGTERM during a periodic evaluation saves the step at once; step time and
examples/s leave evaluation out and count the wait for data; FLOPs per step against an analytic count; the
profiler traces exactly the chosen steps; each TPU generation's devices find their chip; provenance."""

import gzip
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import time

import numpy as np
import pytest

import designclip_jax
from designclip_jax import accelerators, provenance
from designclip_jax.data import pipeline
from designclip_jax.eval import runner
from designclip_jax.train import loop, monitor
from designclip_jax.weights import run_checkpoints
from tests.train_helpers import BatchRecorder, micro_config, sigterm_one_of_two


def _lines(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _tensorboard_events(folder):
  """Every Event of the TFRecord event files in ``folder`` (length, crc, payload, crc per record)."""
  from tensorboardX.proto import event_pb2
  events = []
  for name in sorted(os.listdir(folder)):
    if not name.startswith('events.out'):
      continue
    with open(os.path.join(folder, name), 'rb') as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      length = struct.unpack('<Q', data[offset:offset + 8])[0]
      event = event_pb2.Event()
      event.ParseFromString(data[offset + 12:offset + 12 + length])
      events.append(event)
      offset += 12 + length + 4
  return events


def test_each_step_is_logged_once_after_a_crash_and_a_resume(synthetic_data, tmp_path, monkeypatch):
  """A run killed after logging steps past its last checkpoint repeats those steps when resumed: their first
  lines go (and a line the kill cut short), from metrics.jsonl and (TensorBoard's purge at the resumed step)
  from TensorBoard."""
  _, _, data_dir = synthetic_data

  def crash(index, local):
    if index == 4:
      raise RuntimeError('killed')  # as a kill after step 4 was logged; the last checkpoint is step 3
    return local

  BatchRecorder(monkeypatch, crash)
  config = micro_config(data_dir, steps=6, checkpoint_every=3)
  with pytest.raises(RuntimeError, match='killed'):
    loop.train_and_evaluate(config, str(tmp_path))
  assert [line['step'] for line in _lines(tmp_path)] == [1, 2, 3, 4]
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 5, "lo')  # and a line the kill cut short
  BatchRecorder(monkeypatch)
  loop.train_and_evaluate(config, str(tmp_path))
  lines = _lines(tmp_path)
  assert [line['step'] for line in lines] == [1, 2, 3, 4, 5, 6]
  purges = [e.step for e in _tensorboard_events(tmp_path / 'tensorboard')
            if e.HasField('session_log') and e.session_log.status == e.session_log.START]
  assert purges == [1, 4]  # each start hides what an earlier one logged from its first step on


def test_a_sigterm_during_a_periodic_evaluation_saves_the_step_and_stops_within_seconds(synthetic_data, tmp_path,
                                                                                       monkeypatch):
  """The evaluation stops at its next batch (every process asks the preemption agreement before each batch):
  the run saves the step it reached and reports a preemption (the CLI's exit 75), long before the evaluation
  would have ended, and well inside the ~30 s a scheduler leaves between SIGTERM and SIGKILL."""
  from designclip_jax.eval.embed import EmbeddingInterrupted
  _, _, data_dir = synthetic_data
  reads, signalled, real_getitem = [], [], runner.SplitImages.__getitem__

  def slow_read(self, k):  # 50 ms per drawing: the whole evaluation would take tens of seconds
    reads.append(k)
    if len(reads) >= 24 and not signalled:  # the towers compiled, the evaluation under way
      signalled.append(time.monotonic())
      os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)
    return real_getitem(self, k)

  monkeypatch.setattr(runner.SplitImages, '__getitem__', slow_read)
  interrupted, real_evaluate = [], runner.evaluate

  def evaluate(*args, **kwargs):
    try:
      return real_evaluate(*args, **kwargs)
    except EmbeddingInterrupted:
      interrupted.append(time.monotonic())
      raise

  monkeypatch.setattr(runner, 'evaluate', evaluate)
  config = micro_config(data_dir, steps=8, eval_every=2, checkpoint_every=100)
  config.eval.periodic_tasks = ('zero_shot', 'image_retrieval', 'linear_probe')
  config.eval.batch_size = 8
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert result['step'] == 2 and result['preempted']
  mngr = run_checkpoints.manager(str(tmp_path), keep=None)
  assert mngr.all_steps() == [2]
  mngr.close()
  assert interrupted[0] - signalled[0] < 5, interrupted[0] - signalled[0]  # a batch of 8 drawings is 0.4 s here
  validation, train = pipeline.record_index(data_dir, 'validation'), pipeline.record_index(data_dir, 'train')
  whole = len(validation) + int(validation.num_views().sum()) + len(train)  # covers, sheets, the probe's train
  assert len(reads) < whole / 3, (len(reads), whole)
  assert not any('val/top1' in line for line in _lines(tmp_path))  # no half-finished scores


class _SlowBatches:
  """The train pipeline's iterator, each batch delayed: the loop must count the delay as waiting for data."""

  def __init__(self, iterator, delay):
    self.iterator, self.delay = iterator, delay

  def __iter__(self):
    return self

  def __next__(self):
    time.sleep(self.delay)
    return next(self.iterator)

  def close(self):
    self.iterator.close()


def _tower_matmul_flops(c, examples: int) -> float:
  """Forward + backward (3x forward) FLOPs of the two towers' matrix products for ``examples`` examples: the
  patch embedding, each layer's q/k/v/out projections, attention scores and mix, MLP, the projection; two
  drawings (image and view) and one caption per example. Element-wise work, the fusion head and the optimizer
  come on top."""
  o = c.model.overrides
  patches = (o['vision_image_size'] // o['vision_patch_size']) ** 2
  def layers(tokens, width, mlp, count):
    per = 2 * tokens * width * (4 * width) + 2 * 2 * tokens * tokens * width + 2 * 2 * tokens * width * mlp
    return count * per
  vision = (2 * patches * o['vision_patch_size'] ** 2 * 3 * o['vision_width']
            + layers(patches + 1, o['vision_width'], o['vision_mlp_dim'], o['vision_layers'])
            + 2 * o['vision_width'] * o['embed_dim'])
  text = (layers(o['text_context_length'], o['text_width'], o['text_mlp_dim'], o['text_layers'])
          + 2 * o['text_width'] * o['embed_dim'])
  return 3.0 * examples * (2 * vision + text)


def test_step_time_leaves_evaluation_out_counts_the_data_wait_and_gives_flops(synthetic_data, tmp_path, monkeypatch):
  _, _, data_dir = synthetic_data
  real_dataset, real_evaluate = pipeline.train_dataset, runner.evaluate
  monkeypatch.setattr(pipeline, 'train_dataset', lambda *a, **k: _SlowBatches(iter(real_dataset(*a, **k)), 0.2))

  def slow_evaluate(*args, **kwargs):
    time.sleep(3.0)
    return real_evaluate(*args, **kwargs)

  monkeypatch.setattr(runner, 'evaluate', slow_evaluate)
  v5e = accelerators.CHIPS['v5e']  # CPU devices have no known peak: pretend, to check the MFU arithmetic
  monkeypatch.setattr(monitor, 'chip_of_device', lambda device: v5e)
  config = micro_config(data_dir, steps=3, log_every=1, eval_every=2, checkpoint_every=100)
  config.eval.periodic_tasks = ('zero_shot',)
  loop.train_and_evaluate(config, str(tmp_path))

  lines = _lines(tmp_path)
  assert [line['step'] for line in lines] == [1, 2, 3] and 'val/top1' in lines[1]
  performance = json.loads((tmp_path / 'provenance.json').read_text())['starts'][0]['performance']
  flops = performance['flops_per_device_per_step']
  for line in lines:
    # step 3 follows the 3 s evaluation: counted, it would take longer than that
    assert 0.2 <= line['data_wait_s'] < line['step_time_s'] < 3.0, line
    assert line['examples_per_sec'] == pytest.approx(config.train.global_batch / line['step_time_s'])
    assert line['tflops_per_device'] * 1e12 * line['step_time_s'] == pytest.approx(flops, rel=1e-6)
    assert line['mfu'] == pytest.approx(flops / line['step_time_s'] / v5e.bf16_flops, rel=1e-6)
  # the compiled step of one device (2 of the 16 examples on 8 devices), not of the whole batch: above the
  # towers' matrix products, below twice them (element-wise work, fusion head, optimizer)
  per_device = config.train.global_batch // 8
  assert 1.0 < flops / _tower_matmul_flops(config, per_device) < 2.5, flops / _tower_matmul_flops(config, per_device)
  assert performance['device_memory_peak'].startswith('not available')  # CPU devices keep no statistics
  assert 'device_memory_peak_gib' not in lines[0]


def test_profile_steps_trace_exactly_those_steps(synthetic_data, tmp_path):
  _, _, data_dir = synthetic_data
  config = micro_config(data_dir, steps=5, checkpoint_every=100, profile_steps=(2, 3))
  loop.train_and_evaluate(config, str(tmp_path))
  runs = os.listdir(tmp_path / 'tensorboard' / 'plugins' / 'profile')
  assert len(runs) == 1  # consecutive steps share one trace
  trace, = [os.path.join(root, f) for root, _, files in os.walk(tmp_path / 'tensorboard' / 'plugins')
            for f in files if f.endswith('.trace.json.gz')]
  with gzip.open(trace) as f:
    names = [e.get('name', '') for e in json.load(f)['traceEvents']]
  # XLA:CPU names each device's launch of the program: the train step ran twice on device 0 while tracing
  launches = [n for n in names if n.startswith('[0] ') and n.endswith('Execute (jit_pure_step)')]
  assert len(launches) == 2, launches


def test_every_tpu_generations_devices_find_their_chip():
  """JAX's device_kind strings, from the abstract devices libtpu describes for each topology."""
  pytest.importorskip('libtpu')
  from designclip_jax.aot import topology_devices
  for generation, topology in (('v4', 'v4:2x2x1'), ('v5e', 'v5e:2x2'), ('v5p', 'v5p:2x2x1'), ('v6e', 'v6e:2x2')):
    assert accelerators.chip_of_device(topology_devices(topology)[0]) is accelerators.CHIPS[generation], topology
  import jax
  assert accelerators.chip_of_device(jax.devices('cpu')[0]) is None


def test_runs_and_eval_json_record_code_config_and_data(synthetic_data, tmp_path):
  _, _, data_dir = synthetic_data
  config = micro_config(data_dir, steps=1)
  config.eval.tasks = ('zero_shot',)
  loop.train_and_evaluate(config, str(tmp_path / 'run'))
  start, = json.loads((tmp_path / 'run' / 'provenance.json').read_text())['starts']
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code = start['code']
  assert code['version'] == designclip_jax.__version__
  if not os.path.exists(os.path.join(root, '.git')):  # an installed copy: the version says which code
    assert code['commit'] is None
  else:  # this checkout's commit (one made since the run started may be HEAD now)
    commit = re.fullmatch(r'([0-9a-f]{12})(-dirty)?', code['commit']).group(1)
    assert subprocess.run(['git', 'cat-file', '-e', f'{commit}^{{commit}}'], cwd=root).returncode == 0
  assert start['config'] == json.loads((tmp_path / 'run' / 'config.json').read_text())
  assert start['data'] == {'dir': data_dir, 'fingerprint': provenance.data_fingerprint(data_dir)}
  assert json.loads((tmp_path / 'run' / 'eval_test.json').read_text())['provenance'] == start


def test_the_data_fingerprint_reads_metadata_only_and_sees_a_changed_record(synthetic_data, tmp_path):
  """A copy of the data set without its shards keeps the fingerprint (so none of IMPACT's 28 GB is read); one
  record's class changed in the record index changes it."""
  _, _, data_dir = synthetic_data
  original = provenance.data_fingerprint(data_dir)
  copy = tmp_path / 'copy'
  shutil.copytree(data_dir, copy)
  shards = list((copy / 'designclip_patents').rglob('*.array_record-*'))
  assert shards
  for shard in shards:
    shard.unlink()
  assert provenance.data_fingerprint(str(copy)) == original
  index = copy / 'record_index-train.npz'
  with np.load(index) as z:
    arrays = dict(z)
  arrays['label'][0] = (arrays['label'][0] + 1) % 33
  np.savez(index, **arrays)
  assert provenance.data_fingerprint(str(copy)) != original


def test_a_config_is_compared_without_the_settings_each_host_sets_for_itself():
  flat = provenance.flat_config({'train': {'steps': 8, 'x': (1, 2)}, 'data': {'worker_count': 3, 'dir': 'd'},
                                 'distributed': {'process_id': 1}})
  assert flat == {'train.steps': 8, 'train.x': [1, 2], 'data.dir': 'd'}


@pytest.mark.slow
def test_two_processes_stop_a_periodic_evaluation_together_when_one_gets_sigterm(synthetic_data, tmp_path):
  """Process 1 alone is signalled while both evaluate: they agree (JAX's preemption sync point, asked before every
  embedding batch) to stop at the same batch, save the step they reached and exit 75. Had the evaluation run to its
  end, the agreed stop would have come after the next step, and that step would be the one saved."""
  _, _, data_dir = synthetic_data
  workdir = tmp_path / 'run'
  evaluating = []

  def in_evaluation(texts):  # a second after process 0 began the evaluation at step 2: into its batches
    if not evaluating and 'step 2: evaluating' in texts[0]:
      evaluating.append(time.monotonic())
    return bool(evaluating) and time.monotonic() > evaluating[0] + 1.0

  statuses, outputs, stopped_after = sigterm_one_of_two(
      data_dir, workdir, [tmp_path / f'process{i}.log' for i in range(2)],
      lambda i: ['--config.train.steps=1000', '--config.train.checkpoint_every=1000', '--config.train.eval_every=2',
                 "--config.eval.periodic_tasks=('zero_shot','image_retrieval','linear_probe')",
                 '--config.eval.batch_size=4'],
      in_evaluation, timeout=300)
  assert statuses == [loop.PREEMPTED_EXIT_CODE] * 2, outputs[1][-3000:]
  assert all('preempted: saved step 2;' in out for out in outputs), outputs[0][-2000:]
  mngr = run_checkpoints.manager(str(workdir), keep=None)
  assert mngr.all_steps() == [2]
  mngr.close()
  assert not any('val/top1' in line for line in _lines(workdir))
  assert stopped_after < 30, stopped_after
