"""bench/prior_art_study.py records the code version of the checkout it runs: bench/ and the imported
designclip_jax must come from one checkout (a worktree run without PYTHONPATH imports the venv's editable
install, another checkout), and that checkout's own commit and tracked differences are what a run records."""

import hashlib
import importlib.util
import pathlib
import subprocess
import sys

import pytest

import designclip_jax

BENCH = pathlib.Path(__file__).resolve().parents[1] / 'bench'


@pytest.fixture(scope='module')
def study():
  sys.path.insert(0, str(BENCH))  # the study imports its neighbours ablations and pretrained_start
  try:
    spec = importlib.util.spec_from_file_location('prior_art_study', BENCH / 'prior_art_study.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  finally:
    sys.path.remove(str(BENCH))
  return module


def _git(repo, *args) -> bytes:
  return subprocess.run(['git', '-C', str(repo), '-c', 'user.name=t', '-c', 'user.email=t@t', *args],
                        capture_output=True, check=True).stdout


def test_code_state_is_the_state_of_the_checkout_the_package_comes_from(study, tmp_path, monkeypatch):
  main, worktree = tmp_path / 'main', tmp_path / 'pa_study'
  (main / 'designclip_jax').mkdir(parents=True)
  (main / 'designclip_jax' / '__init__.py').write_text('x = 1\n')
  _git(main, 'init', '-q')
  _git(main, 'add', 'designclip_jax/__init__.py')
  _git(main, 'commit', '-qm', 'one')
  head = _git(main, 'rev-parse', 'HEAD').decode().strip()
  _git(main, 'worktree', 'add', '-q', '--detach', str(worktree), 'HEAD')
  (main / 'designclip_jax' / '__init__.py').write_text('x = 2\n')  # another engineer's edit in the shared tree

  monkeypatch.setattr(study.ablations, 'REPO', str(worktree))
  monkeypatch.setattr(designclip_jax, '__file__', str(main / 'designclip_jax' / '__init__.py'))
  with pytest.raises(SystemExit, match=f'designclip_jax is imported from {main}: run with PYTHONPATH={worktree}$'):
    study.code_state()

  monkeypatch.setattr(designclip_jax, '__file__', str(worktree / 'designclip_jax' / '__init__.py'))
  assert study.code_state() == {'commit': head, 'dirty': False, 'diff_sha256': None}  # main's edit is not its
  (worktree / 'designclip_jax' / '__init__.py').write_text('x = 3\n')
  diff = _git(worktree, 'diff', 'HEAD')
  assert b'+x = 3' in diff
  assert study.code_state() == {'commit': head, 'dirty': True, 'diff_sha256': hashlib.sha256(diff).hexdigest()}
