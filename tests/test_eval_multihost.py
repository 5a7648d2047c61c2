"""Evaluation on every host: two jax.distributed processes (2 devices each), each embedding its share of
every batch, give the scores and embeddings of one process."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from designclip_jax.eval.__main__ import main
from tests.eval_helpers import tiny_clip_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_give_the_scores_of_one(synthetic_data, tmp_path):
  _, _, data_dir = synthetic_data
  checkpoint = tiny_clip_dir(str(tmp_path / 'clip'), data_dir)
  # batch 12 over 4 devices: 3 rows per device, and the splits' last batches are partial (padded)
  args = lambda name: ['--checkpoint', checkpoint, '--data', data_dir, '--task', 'all', '--batch-size', '12',
                       '--save-embeddings', str(tmp_path / f'{name}.npz'), '--output', str(tmp_path / f'{name}.json')]
  main(args('one'))

  port = str(_free_port())
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, 'tests', 'eval_multihost_worker.py'), port, str(i)]
                            + args('two'), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outputs = []
  for p in procs:
    try:
      outputs.append(p.communicate(timeout=240)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail('multi-process eval timed out')
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  assert 'done 0 4' in outputs[0] and 'done 1 4' in outputs[1]
  assert 'mAP' in outputs[0] and 'mAP' not in outputs[1]  # process 0 reports

  one, two = (json.loads((tmp_path / f'{n}.json').read_text()) for n in ('one', 'two'))
  assert one.keys() == two.keys() and {'top1', 'mAP', 't2i_R@5', 'probe_acc'} <= set(one)
  for k, v in one.items():
    assert two[k] == pytest.approx(v, abs=1e-6), k
  emb_one, emb_two = np.load(tmp_path / 'one.npz'), np.load(tmp_path / 'two.npz')
  for k in ('query', 'gallery'):
    np.testing.assert_allclose(emb_two[k], emb_one[k], atol=1e-5)
    np.testing.assert_array_equal(emb_two[f'{k}_labels'], emb_one[f'{k}_labels'])
