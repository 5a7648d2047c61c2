"""End-to-end training on the synthetic set: learning, NaN stop, exact resume (also with other worker
counts), preemption agreed by two processes, multi-process parity, gs:// work and data directories."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from designclip_jax import sharding
from designclip_jax.train import loop
from designclip_jax.weights import run_checkpoints
from designclip_jax.weights.loader import load_model
from designclip_jax.weights.model_spec import ModelSpec
from tests.train_helpers import (BatchRecorder, fake_bucket, micro_config, pretrained_checkpoint, sigterm_at,  # noqa: F401
                                 sigterm_one_of_two)  # (fake_bucket: a fixture)


def _final_params(workdir, step=None):
  spec = ModelSpec.load(workdir)
  mngr = run_checkpoints.manager(workdir, keep=None)
  graphdef, abstract = nnx.split(nnx.eval_shape(spec.build))
  mesh = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  state, _, meta = run_checkpoints.restore(mngr, step or mngr.latest_step(), abstract,
                                         sharding.state_shardings(abstract, mesh))
  mngr.close()
  return jax.device_get(nnx.to_pure_dict(state)), meta


def _losses(workdir):
  import json
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line)['loss'] for line in f]


def test_short_run_learns_and_evaluates(synthetic_data, tmp_path):
  _, _, data_dir = synthetic_data
  config = micro_config(data_dir, steps=60, checkpoint_every=60, log_every=5, eval_every=30)
  config.loss.lambdas = (1.0, 1.0, 1.0)
  config.eval.tasks = ('zero_shot', 'image_retrieval')
  result = loop.train_and_evaluate(config, str(tmp_path))
  import json
  with open(tmp_path / 'metrics.jsonl') as f:
    records = [json.loads(line) for line in f]
  periodic = [r for r in records if 'val/top1' in r]
  assert [r['step'] for r in periodic] == [30, 60] and all(0 <= r['val/t2i_R@5'] <= 1 for r in periodic)
  losses = [r['loss'] for r in records if 'loss' in r]
  assert len(losses) == 12
  assert np.mean(losses[-3:]) < 0.85 * np.mean(losses[:3]), losses
  for key in ('top1', 'balanced_acc', 'head_acc', 'mAP', 'rank@10'):
    assert 0.0 <= result[key] <= 1.0
  assert os.path.isfile(tmp_path / 'eval_test.json')
  assert os.listdir(tmp_path / 'tensorboard')


def test_nan_stops_the_run_naming_the_step(synthetic_data, tmp_path, monkeypatch):
  _, _, data_dir = synthetic_data

  def poison(index, local):
    if index == 5:
      local = dict(local, weight=np.full_like(local['weight'], np.nan))  # drawings are uint8: no NaN there
    return local

  BatchRecorder(monkeypatch, poison)
  with pytest.raises(loop.NonFiniteLossError, match='non-finite loss at step 5'):
    loop.train_and_evaluate(micro_config(data_dir), str(tmp_path))
  mngr = run_checkpoints.manager(str(tmp_path), keep=None)
  assert mngr.all_steps() == [4]  # the checkpoint before the NaN survives; none after it
  mngr.close()


def test_preempted_and_resumed_run_equals_a_straight_run(synthetic_data, tmp_path, monkeypatch, capsys):
  """Resumed with another data.worker_count (the stream is a function of the step), from a checkpoint that
  also holds a data-iterator state as older runs saved it (ignored): the same batches and parameters."""
  _, _, data_dir = synthetic_data
  straight = BatchRecorder(monkeypatch)
  loop.train_and_evaluate(micro_config(data_dir), str(tmp_path / 'straight'))
  straight_params, straight_meta = _final_params(str(tmp_path / 'straight'))

  save = run_checkpoints.save
  old_format_meta = {'data_iterator': {'workers_state': {'0': 'grain state'}, 'total_num_workers': 1}}
  monkeypatch.setattr(run_checkpoints, 'save', lambda *a: save(*a[:-1], {**a[-1], **old_format_meta}))
  first = BatchRecorder(monkeypatch, sigterm_at(4))  # saves and stops after step 5
  result = loop.train_and_evaluate(micro_config(data_dir), str(tmp_path / 'resumed'))
  assert result['step'] == 5 and result['preempted']
  monkeypatch.setattr(run_checkpoints, 'save', save)
  capsys.readouterr()
  second = BatchRecorder(monkeypatch)
  config = micro_config(data_dir)
  config.data.worker_count = 1
  assert not loop.train_and_evaluate(config, str(tmp_path / 'resumed'))['preempted']
  assert f'resumed from step 5 ({tmp_path}/resumed/checkpoints/5)\n' in capsys.readouterr().out
  resumed_params, resumed_meta = _final_params(str(tmp_path / 'resumed'))
  assert resumed_meta['step'] == straight_meta['step'] == 8
  seen = first.seen + second.seen
  assert len(seen) == len(straight.seen) == 8
  for a, b in zip(seen, straight.seen):
    np.testing.assert_array_equal(a, b)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), resumed_params, straight_params)


@pytest.mark.parametrize('kind', ['hf', pytest.param('openai-resnet', marks=pytest.mark.slow)])  # ResNet: 24 s, slow
def test_training_starts_from_a_checkpoint_and_keeps_a_frozen_tower(synthetic_data, tmp_path, monkeypatch, kind):
  """model.init loads both towers from a transformers directory or an OpenAI-format file (here a ResNet
  tower); train.freeze_vision keeps the vision tower bit-identical (no update, no weight decay) while the
  text tower moves by at most what Adam allows."""
  pytest.importorskip('torch')
  from designclip_jax.weights import hf_format
  from designclip_jax.data import pipeline
  from designclip_jax.data.tokenizer import Tokenizer
  _, _, data_dir = synthetic_data
  tokenizer = Tokenizer.from_pretrained(pipeline.tokenizer_dir(data_dir), 32)
  init = pretrained_checkpoint(kind, tmp_path, tokenizer)
  steps, lr = 4, 1e-3
  config = micro_config(data_dir, steps=steps, checkpoint_every=2, learning_rate=lr, freeze_vision=True)
  config.model.init = init

  BatchRecorder(monkeypatch, sigterm_at(1))  # stops after step 2, with a checkpoint
  assert loop.train_and_evaluate(config, str(tmp_path / 'run'))['step'] == 2
  BatchRecorder(monkeypatch)
  # resumes: the frozen tower's optimizer state is array-free (optax.MaskedNode)
  loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert len(_losses(str(tmp_path / 'run'))) == steps  # the second call went on from step 2, not from 0

  trained, _ = _final_params(str(tmp_path / 'run'))
  spec = ModelSpec.load(str(tmp_path / 'run'))
  assert spec.clip.text.eos_token_id == tokenizer.eos_token_id  # pooled at the tokenizer's EOS, not argmax
  reference = hf_format.hf_to_params(hf_format.read_checkpoint(init)[1], nnx.eval_shape(lambda: spec.build().clip))
  fresh = nnx.to_pure_dict(nnx.state(spec.build(seed=7).clip, nnx.Any(nnx.Param, nnx.BatchStat)))
  leaves = lambda tree: dict(jax.tree_util.tree_flatten_with_path(tree)[0])
  trained_clip, reference, fresh = leaves(trained['clip']), leaves(reference), leaves(fresh)
  assert trained_clip.keys() == reference.keys()
  # Adam moves a parameter by about lr per step (|m/sqrt(v)| <= ~1) plus weight decay; a random init sits far away
  bound = 2 * lr * steps
  for path, ref in reference.items():
    name = jax.tree_util.keystr(path)
    change = np.max(np.abs(np.asarray(trained_clip[path]) - ref))
    if 'vision_model' in name or 'visual_projection' in name:
      assert change == 0.0, name
    else:
      assert change <= bound, (name, change)
  text_moved = [np.max(np.abs(np.asarray(trained_clip[p]) - r)) for p, r in reference.items()
                if 'text_model' in jax.tree_util.keystr(p)]
  assert max(text_moved) > 0  # the text tower did train
  random_gap = np.median([np.max(np.abs(np.asarray(fresh[p]) - r)) for p, r in reference.items()])
  assert random_gap > 5 * bound  # so a tower left at its random init would fail the bound above


def test_sigterm_on_one_of_two_processes_stops_both_at_one_step_with_the_parameters_of_one(
    synthetic_data, tmp_path, monkeypatch):
  """srun or a TPU host may signal one process (and its Grain worker) only: both processes save the same
  step N and exit with the requeue status, and their parameters equal those of one process (4 devices, the
  same global batch of 16) after N steps. Worker counts differ per process: the batches do not. Resumed by
  one process, the run sees the batches and reaches the parameters of the uninterrupted one-process run."""
  _, _, data_dir = synthetic_data
  workdir = tmp_path / 'multi'
  metrics = workdir / 'metrics.jsonl'
  statuses, outputs, _ = sigterm_one_of_two(
      data_dir, workdir, [tmp_path / f'process{i}.log' for i in range(2)],
      lambda i: ['--config.train.steps=1000', '--config.train.checkpoint_every=1000', f'--config.data.worker_count={i}'],
      lambda _: metrics.exists() and len(metrics.read_text().splitlines()) >= 2,  # training is under way
      timeout=240)
  assert statuses == [loop.PREEMPTED_EXIT_CODE] * 2, outputs[1][-3000:]
  saved = [[int(line.split()[3].rstrip(';')) for line in out.splitlines() if line.startswith('preempted: saved step')]
           for out in outputs]
  mngr = run_checkpoints.manager(str(workdir), keep=None)
  assert saved[0] == saved[1] == mngr.all_steps() and 2 < mngr.latest_step() < 1000, saved
  mngr.close()
  stop = saved[0][0]

  # one process on 4 devices, saving steps stop..stop+2; then the 2-process checkpoint resumed by 1 process
  config = micro_config(data_dir, steps=1000, checkpoint_every=1, keep_checkpoints=3)
  config.mesh.data = 4
  original = sharding.make_mesh
  monkeypatch.setattr(loop.sharding, 'make_mesh',  # the run's mesh on 4 devices; meshes given devices unchanged
                      lambda data, fsdp, **options: original(data, fsdp, **{'devices': jax.devices()[:4], **options}))

  single = BatchRecorder(monkeypatch, sigterm_at(stop + 1))
  assert loop.train_and_evaluate(config, str(tmp_path / 'single'))['step'] == stop + 2
  resumed = BatchRecorder(monkeypatch, sigterm_at(1))
  assert loop.train_and_evaluate(config, str(workdir))['step'] == stop + 2
  for a, b in zip(resumed.seen, single.seen[stop:], strict=True):
    np.testing.assert_array_equal(a, b)
  for step in (stop, stop + 2):
    multi, _ = _final_params(str(workdir), step)
    one, _ = _final_params(str(tmp_path / 'single'), step)
    # 2 processes sum gradients in another order (~1e-9); AdamW (eps 1e-6) turns that into up to ~1e-5 on
    # the few parameters whose gradients are ~0 (seen: 1.1e-5 on 2 of 32 elements of one bias), so all
    # agree within 1e-4 and nearly all within 1e-6; a wrong batch or step moves most parameters by ~lr (3e-3)
    diffs = np.concatenate([np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).ravel()
                            for a, b in zip(jax.tree.leaves(multi), jax.tree.leaves(one), strict=True)])
    assert diffs.max() < 1e-4 and np.mean(diffs > 1e-6) < 0.01, (diffs.max(), np.mean(diffs > 1e-6))


def test_a_gs_workdir_reaches_every_writer_unchanged(synthetic_data, fake_bucket, tmp_path, monkeypatch):
  """model.json, config.json, metrics.jsonl (rewritten whole on resume: objects cannot be appended to),
  TensorBoard, checkpoints and the eval JSON all land in the bucket; nothing in a local ./gs:/ folder."""
  _, _, data_dir = synthetic_data
  root, orbax_dirs = fake_bucket

  BatchRecorder(monkeypatch, sigterm_at(1))  # stops after step 2, with a checkpoint
  loop.train_and_evaluate(micro_config(data_dir), 'gs://bucket/run')
  BatchRecorder(monkeypatch)
  config = micro_config(data_dir)
  config.eval.tasks = ('zero_shot',)
  result = loop.train_and_evaluate(config, 'gs://bucket/run')  # resumes from the bucket
  assert orbax_dirs == ['gs://bucket/run/checkpoints'] * 2  # both runs
  run = root / 'bucket' / 'run'
  assert ModelSpec.load('gs://bucket/run') == ModelSpec.load(str(run))
  assert json.loads((run / 'config.json').read_text())['eval']['tasks'] == ['zero_shot']
  assert [r['step'] for r in map(json.loads, (run / 'metrics.jsonl').read_text().splitlines())] == list(range(1, 9))
  assert json.loads((run / 'eval_test.json').read_text())['top1'] == result['top1']
  assert [f.stat().st_size > 0 for f in (run / 'tensorboard').iterdir()] == [True, True]  # one file per run
  assert sorted(os.listdir(run / 'checkpoints'), key=int) == ['2', '4', '8']
  clip, _, _ = load_model('gs://bucket/run')  # eval's loader finds the workdir in the bucket
  assert orbax_dirs[-1] == 'gs://bucket/run/checkpoints'
  trained, _ = _final_params(str(run))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(nnx.to_pure_dict(nnx.state(clip))), trained['clip'])
  assert not (tmp_path / 'gs:').exists()


def test_a_gs_data_dir_is_read_through_epath(synthetic_data, fake_bucket):
  """Up to the records themselves (ArrayRecord reads gs:// with its own GCS client): data set directory,
  class table, record index, tokenizer (copied locally for transformers) and the TFDS metadata."""
  import tensorflow_datasets as tfds
  from designclip_jax.data import pipeline
  from designclip_jax.data.tokenizer import Tokenizer
  from designclip_jax.weights.model_spec import start_from_config
  _, _, data_dir = synthetic_data
  root, _ = fake_bucket
  (root / 'bucket').mkdir()
  os.symlink(data_dir, root / 'bucket' / 'data')
  url = 'gs://bucket/data'
  assert pipeline.dataset_dir(url) == url + pipeline.dataset_dir(data_dir)[len(data_dir):]
  assert pipeline.class_table(url) == pipeline.class_table(data_dir)
  np.testing.assert_array_equal(pipeline.record_index(url, 'train').label, pipeline.record_index(data_dir, 'train').label)
  captions = ['a chair with four legs', 'a lamp']
  np.testing.assert_array_equal(Tokenizer.from_pretrained(pipeline.tokenizer_dir(url), 32)(captions),
                                Tokenizer.from_pretrained(pipeline.tokenizer_dir(data_dir), 32)(captions))
  info = tfds.builder_from_directory(pipeline.dataset_dir(url)).info
  assert info.splits['train'].num_examples == tfds.builder_from_directory(pipeline.dataset_dir(data_dir)).info.splits['train'].num_examples
  spec, tokenizer, _ = start_from_config(micro_config(url).model, 33, pipeline.tokenizer_dir(url))
  assert spec.tokenizer_dir == url + '/tokenizer'  # where it came from, as given
  np.testing.assert_array_equal(tokenizer(captions), Tokenizer.from_pretrained(pipeline.tokenizer_dir(data_dir), 32)(captions))


def test_a_grain_worker_that_receives_sigterm_keeps_serving_batches(synthetic_data):
  """srun signals every process, Grain's workers too: a worker killed by SIGTERM crashed the train loop
  before its preemption checkpoint. Workers leave the signal to the main process (which saves, then stops
  them) and go on serving the same batches as a worker-free pipeline."""
  import itertools
  import multiprocessing
  from designclip_jax.data import pipeline
  from designclip_jax.data.tokenizer import Tokenizer
  _, _, data_dir = synthetic_data
  tokenizer = Tokenizer.from_pretrained(pipeline.tokenizer_dir(data_dir), 32)
  opts = lambda workers: pipeline.TrainOptions(image_size=32, global_batch=4, worker_count=workers)
  expected = list(itertools.islice(pipeline.train_dataset(data_dir, opts(0), tokenizer), 12))
  before = set(multiprocessing.active_children())
  iterator = iter(pipeline.train_dataset(data_dir, opts(1), tokenizer))
  got = [next(iterator)]
  workers = set(multiprocessing.active_children()) - before
  assert workers
  for worker in workers:
    os.kill(worker.pid, signal.SIGTERM)
  time.sleep(1)
  got += list(itertools.islice(iterator, 11))
  iterator.close()
  for a, b in zip(got, expected, strict=True):
    for key in b:
      np.testing.assert_array_equal(a[key], b[key])


def test_train_cli_on_a_folder_without_a_data_set_says_to_ingest(tmp_path):
  """A new user's first mistake: --config.data.dir at a folder with no ingested data set (before: a
  traceback for classes.json). One line naming the folder and the ingest command, exit status 2."""
  (tmp_path / 'empty').mkdir()
  proc = subprocess.run([sys.executable, '-m', 'designclip_jax.train', '--config', 'configs/synthetic_tiny.py',
                         '--workdir', str(tmp_path / 'run'), f'--config.data.dir={tmp_path / "empty"}'],
                        capture_output=True, text=True, timeout=120,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr
  error = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert len(error) == 1 and str(tmp_path / 'empty') in error[0] and 'designclip_jax.data.ingest' in error[0]
