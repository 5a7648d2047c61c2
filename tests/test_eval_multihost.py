"""Evaluation on every host: two jax.distributed processes (2 devices each), each embedding its share of
every batch, give the scores and embeddings of one process."""

import json
import os

import numpy as np
import pytest

from designclip_jax.eval.__main__ import main
from tests.eval_helpers import tiny_clip_dir
from tests.processes import free_port, run_workers

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'eval_multihost_worker.py')


def test_two_processes_give_the_scores_of_one(synthetic_data, tmp_path):
  _, _, data_dir = synthetic_data
  checkpoint = tiny_clip_dir(str(tmp_path / 'clip'), data_dir)
  # batch 12 over 4 devices: 3 rows per device, and the splits' last batches are partial (padded)
  args = lambda name: ['--checkpoint', checkpoint, '--data', data_dir, '--task', 'all', '--batch-size', '12',
                       '--save-embeddings', str(tmp_path / f'{name}.npz'), '--output', str(tmp_path / f'{name}.json')]
  main(args('one'))

  port = str(free_port())
  outputs = run_workers([[WORKER, port, str(i)] + args('two') for i in range(2)])
  assert 'done 0 4' in outputs[0] and 'done 1 4' in outputs[1]
  assert 'mAP' in outputs[0] and 'mAP' not in outputs[1]  # process 0 reports

  one, two = (json.loads((tmp_path / f'{n}.json').read_text()) for n in ('one', 'two'))
  made_by = one.pop('provenance'), two.pop('provenance')
  assert [m['processes'] for m in made_by] == [1, 2] and made_by[0]['data'] == made_by[1]['data']
  assert one.keys() == two.keys() and {'top1', 'mAP', 't2i_R@5', 'probe_acc'} <= set(one)
  for k, v in one.items():
    assert two[k] == pytest.approx(v, abs=1e-6), k
  emb_one, emb_two = np.load(tmp_path / 'one.npz'), np.load(tmp_path / 'two.npz')
  for k in ('query', 'gallery'):
    np.testing.assert_allclose(emb_two[k], emb_one[k], atol=1e-5)
    np.testing.assert_array_equal(emb_two[f'{k}_labels'], emb_one[f'{k}_labels'])


@pytest.mark.slow
def test_training_evaluates_on_every_process(synthetic_data, tmp_path):
  """Periodic and final evaluation inside a 2-process training run (each process embedding its share on
  the training mesh) give the scores the eval CLI gets from the saved checkpoint in one process."""
  from tests.eval_multihost_worker import FINAL_TASKS
  _, _, data_dir = synthetic_data
  workdir = str(tmp_path / 'run')
  port = str(free_port())
  outputs = run_workers([[WORKER, port, str(i), '--train', data_dir, workdir] for i in range(2)])
  assert 'done 0 4' in outputs[0] and 'done 1 4' in outputs[1]
  logged = [json.loads(line) for line in (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()]
  assert any('val/top1' in entry for entry in logged)  # the periodic evaluation ran
  final = json.loads((tmp_path / 'run' / 'eval_test.json').read_text())
  assert final.pop('provenance')['processes'] == 2

  main(['--checkpoint', workdir, '--data', data_dir, '--task', *FINAL_TASKS, '--output', str(tmp_path / 'cli.json')])
  cli = json.loads((tmp_path / 'cli.json').read_text())
  cli.pop('provenance')
  assert {'top1', 'mAP', 't2i_R@5'} <= set(final)
  for k, v in cli.items():
    if not isinstance(v, list):  # the CLI's JSON also lists per-query values (per_query_ap)
      assert final[k] == pytest.approx(v, abs=1e-6), k

  # and the eval CLI on that training workdir with two processes (the restored model must be held by
  # every process, not only process 0's first device)
  two_args = ['--checkpoint', workdir, '--data', data_dir, '--task', *FINAL_TASKS, '--output', str(tmp_path / 'two.json')]
  port = str(free_port())
  outputs = run_workers([[WORKER, port, str(i)] + two_args for i in range(2)])
  assert 'done 0 4' in outputs[0] and 'done 1 4' in outputs[1]
  two = json.loads((tmp_path / 'two.json').read_text())
  two.pop('provenance')
  for k, v in cli.items():
    assert two[k] == pytest.approx(v, abs=1e-6), k
