"""A run's workdir holds all that loading it needs (issue 21): a run fine-tuned from an HF directory that is then
deleted, moved to another folder, evaluates, indexes and resumes; model.init may be in a bucket; workdirs
saved before (an absolute tokenizer_dir in model.json, no tokenizer copy) still load and resume."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from designclip_jax.data import pipeline
from designclip_jax.data.tokenizer import Tokenizer
from designclip_jax.train import loop
from designclip_jax.weights import hf_format
from designclip_jax.weights.loader import load_model
from designclip_jax.weights.model_spec import SPEC_FILE, TOKENIZER_DIR, ModelSpec
from tests.train_helpers import fake_bucket, micro_config, pretrained_checkpoint  # noqa: F401  (a fixture)

CAPTIONS = ['a chair with four legs', 'a lamp with a conical shade']


def _logged_steps(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line)['step'] for line in f]


def test_a_run_from_a_deleted_hf_dir_moved_elsewhere_evaluates_indexes_and_resumes(synthetic_data, tmp_path, capsys):
  pytest.importorskip('torch')
  pytest.importorskip('pyarrow')
  from designclip_jax.eval.__main__ import main as eval_main
  from designclip_jax.search.__main__ import main as search_main
  from designclip_jax.search.index import model_identity
  _, _, data_dir = synthetic_data
  data_tokenizer = Tokenizer.from_pretrained(pipeline.tokenizer_dir(data_dir), 32)
  init = pretrained_checkpoint('hf', tmp_path, data_tokenizer)
  config = micro_config(data_dir, steps=3, checkpoint_every=3)
  config.model.init = init
  config.model.pixel_normalization = 'clip'
  config.eval.tasks = ('zero_shot', 'image_retrieval')
  loop.train_and_evaluate(config, str(tmp_path / 'run'))
  final = json.loads((tmp_path / 'run' / 'eval_test.json').read_text())
  fingerprint = model_identity(str(tmp_path / 'run'), *load_model(str(tmp_path / 'run')))['fingerprint']
  tokens = data_tokenizer(CAPTIONS)

  shutil.rmtree(init)  # the start is gone, and the run moves to another folder
  os.makedirs(tmp_path / 'elsewhere')
  moved = str(tmp_path / 'elsewhere' / 'run')
  shutil.move(str(tmp_path / 'run'), moved)
  spec = ModelSpec.load(moved)
  assert spec.pretrained == init and spec.tokenizer_dir == init  # recorded as provenance only
  np.testing.assert_array_equal(spec.tokenizer(moved)(CAPTIONS), tokens)

  # evaluates: the eval CLI restores what the run's own final evaluation scored in memory
  eval_main(['--checkpoint', moved, '--data', data_dir, '--task', 'zero_shot', 'image_retrieval',
             '--output', str(tmp_path / 'moved.json')])
  scores = json.loads((tmp_path / 'moved.json').read_text())
  assert {'top1', 'mAP'} <= set(scores)
  for k, v in final.items():
    if isinstance(v, float):
      assert scores[k] == pytest.approx(v, abs=1e-6), k

  # indexes: the index names the weights the run had before it moved
  search_main(['index', '--checkpoint', moved, '--data', data_dir, '--out', str(tmp_path / 'index'),
               '--split', 'test'])
  index = json.loads((tmp_path / 'index' / 'index.json').read_text())
  assert index['model']['fingerprint'] == fingerprint
  test_index = pipeline.record_index(data_dir, 'test')
  rows = sum(np.load(tmp_path / 'index' / (s['name'] + '.npy'), mmap_mode='r').shape[0] for s in index['shards'])
  assert rows == int(test_index.num_views().sum()) + len(test_index)  # every drawing and caption

  # resumes: from its last step, without the start's directory
  capsys.readouterr()
  config.train.steps = 5
  result = loop.train_and_evaluate(config, moved)
  assert result['step'] == 5 and f'resumed from step 3 ({moved}/checkpoints/3)' in capsys.readouterr().out
  assert _logged_steps(moved) == [1, 2, 3, 4, 5]
  starts = json.loads(open(os.path.join(moved, 'provenance.json')).read())['starts']
  assert [s['resumed_from'] for s in starts] == [0, 3]


def test_model_init_in_a_bucket_is_read_from_a_local_copy_of_what_loading_needs(synthetic_data, fake_bucket,
                                                                                  tmp_path):
  """The towers start from the bucket's HF weights exactly (learning rate 0), the tokenizer lands in the workdir,
  and only the files a checkpoint is read from are copied (not the other formats' weights beside them)."""
  pytest.importorskip('torch')
  _, _, data_dir = synthetic_data
  root, _ = fake_bucket
  data_tokenizer = Tokenizer.from_pretrained(pipeline.tokenizer_dir(data_dir), 32)
  pretrained_checkpoint('hf', root / 'bucket', data_tokenizer)
  (root / 'bucket' / 'hf' / 'flax_model.msgpack').write_bytes(b'\0' * 1000)  # a format nobody reads here
  url = 'gs://bucket/hf'
  with hf_format.local_checkpoint(url) as local:
    copied = sorted(os.listdir(local))
  assert copied == ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']
  assert not os.path.exists(local)  # the copy is temporary

  config = micro_config(data_dir, steps=1, learning_rate=0.0)
  config.model.init = url
  config.model.pixel_normalization = 'clip'
  loop.train_and_evaluate(config, str(tmp_path / 'run'))
  spec = ModelSpec.load(str(tmp_path / 'run'))
  assert spec.pretrained == url and spec.tokenizer_dir == url
  assert sorted(os.listdir(tmp_path / 'run' / TOKENIZER_DIR)) == ['tokenizer.json', 'tokenizer_config.json']
  np.testing.assert_array_equal(spec.tokenizer(str(tmp_path / 'run'))(CAPTIONS), data_tokenizer(CAPTIONS))
  clip, _, _ = load_model(str(tmp_path / 'run'))
  expected = hf_format.hf_to_params(hf_format.read_checkpoint(str(root / 'bucket' / 'hf'))[1],
                                    nnx.eval_shape(lambda: spec.build().clip))
  flat = lambda tree: dict(jax.tree_util.tree_flatten_with_path(tree)[0])
  trained, expected = flat(nnx.to_pure_dict(nnx.state(clip, nnx.Param))), flat(expected)
  assert trained.keys() == expected.keys()
  for key, value in expected.items():
    np.testing.assert_array_equal(np.asarray(trained[key]), value, err_msg=jax.tree_util.keystr(key))


def test_a_workdir_saved_before_runs_held_their_tokenizer_still_loads_and_resumes(synthetic_data, tmp_path):
  """model.json then named the tokenizer's folder by absolute path, and the workdir held no copy."""
  _, _, data_dir = synthetic_data
  workdir = tmp_path / 'old'
  loop.train_and_evaluate(micro_config(data_dir, steps=2, checkpoint_every=2), str(workdir))
  shutil.rmtree(workdir / TOKENIZER_DIR)
  raw = json.loads((workdir / SPEC_FILE).read_text())
  raw['tokenizer_dir'] = os.path.abspath(pipeline.tokenizer_dir(data_dir))
  (workdir / SPEC_FILE).write_text(json.dumps(raw))

  _, tokenizer, _ = load_model(str(workdir))
  np.testing.assert_array_equal(tokenizer(CAPTIONS), Tokenizer.from_pretrained(pipeline.tokenizer_dir(data_dir),
                                                                               32)(CAPTIONS))
  assert loop.train_and_evaluate(micro_config(data_dir, steps=3, checkpoint_every=3), str(workdir))['step'] == 3
