"""bench/ablations.py keeps a study to one code version: every run records its commit, and runs of mixed
commits are refused by name unless the caller asks for a labelled table."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def ablations():
  spec = importlib.util.spec_from_file_location('ablations', ROOT / 'bench' / 'ablations.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _run(ablations, seed, commit, dirty=False):
  run = {m: 0.1 * (seed + 1) for m in ablations.METRICS + ('seconds',)}
  return {**run, 'seed': seed, 'steps': 100, 'commit': commit, 'dirty': dirty}


def test_git_state_names_the_commit_and_a_changed_tracked_file(ablations, tmp_path):
  git = lambda *a: subprocess.run(['git', '-C', str(tmp_path), *a], capture_output=True, text=True, check=True).stdout
  git('init', '-q')
  (tmp_path / 'code.py').write_text('x = 1\n')
  git('add', 'code.py')
  git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'one')
  head = git('rev-parse', 'HEAD').strip()
  (tmp_path / 'untracked.txt').write_text('not code')  # untracked files do not make the code differ
  assert ablations.git_state(str(tmp_path)) == {'commit': head, 'dirty': False}
  (tmp_path / 'code.py').write_text('x = 2\n')
  assert ablations.git_state(str(tmp_path)) == {'commit': head, 'dirty': True}
  assert ablations.code_version({'commit': head, 'dirty': True}) == head[:7] + '+dirty'
  assert ablations.git_state(str(tmp_path / 'nowhere'))['commit'] == 'unknown'


def test_mixed_commits_are_named_and_one_version_is_not(ablations):
  old, new = 'a' * 40, 'b' * 40
  one = {'baseline': [_run(ablations, 0, old), _run(ablations, 1, old)]}
  assert ablations.stale_runs(one, 'bbbbbbb') == []  # a whole study at one (older) commit is one code version
  mixed = {'baseline': [_run(ablations, 0, old), _run(ablations, 1, new)], 'full': [_run(ablations, 0, new, True)],
           'beta=0.5': [{k: v for k, v in _run(ablations, 2, new).items() if k not in ('commit', 'dirty')}]}
  assert ablations.stale_runs(mixed, 'bbbbbbb') == [
      'baseline (seeds 0) @ aaaaaaa', 'full (seeds 0) @ bbbbbbb+dirty', 'beta=0.5 (seeds 2) @ unrecorded']
  table = ablations.summarise(mixed)
  assert table['baseline']['code'] == 'aaaaaaa / bbbbbbb'
  assert table['baseline']['top1'] == pytest.approx((0.15, 0.05, 2))
  assert ablations.markdown(table).splitlines()[2].endswith('| aaaaaaa / bbbbbbb |')


def test_the_study_refuses_a_mixed_table_unless_told(ablations, tmp_path, monkeypatch, capsys):
  """Every run is already done (nothing trains): the refusal names the stale runs; the flag writes a table
  whose rows say which commits they were measured at."""
  head = ablations.git_state()
  runs = {'baseline': [_run(ablations, 0, 'c' * 40)], 'full': [{**_run(ablations, 0, head['commit']),
                                                                 'dirty': head['dirty']}]}
  (tmp_path / 'ablations_runs.json').write_text(json.dumps(runs))
  argv = ['ablations.py', '--settings', 'baseline', 'full', '--seeds', '0', '--out', str(tmp_path)]
  monkeypatch.setattr(sys, 'argv', argv)
  with pytest.raises(SystemExit, match=r'mixes code versions.*baseline \(seeds 0\) @ ccccccc\. Rerun them'):
    ablations.main()
  assert not (tmp_path / 'ablations.md').exists()
  monkeypatch.setattr(ablations, 'plots', lambda *args: [])
  monkeypatch.setattr(sys, 'argv', argv + ['--allow-mixed-commits'])
  ablations.main()
  text = (tmp_path / 'ablations.md').read_text()
  assert 'Runs of several code versions' in text and '| ccccccc |' in text
  assert f'| {ablations.code_version(head)} |' in text
