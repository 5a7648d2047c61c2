"""launch/tpu_pod.sh builds one wheel of the checkout, copies it to every worker and starts training there
under the allocator (its dry run, and with gcloud replaced by a local stand-in); the wheel holds every module;
the shell scripts pass shellcheck."""

import os
import shlex
import shutil
import subprocess
import sys
import zipfile

import pytest
import setuptools

from tests.launch_helpers import ROOT, env, first_choice


def test_the_wheel_holds_every_module():
  # a folder of modules without __init__.py is left out of `packages = find:` (designclip_jax/data was)
  found = set(setuptools.find_packages(str(ROOT), include=['designclip_jax*']))
  folders = {os.path.relpath(d, ROOT).replace(os.sep, '.') for d, _, files in os.walk(ROOT / 'designclip_jax')
             if '__pycache__' not in d and any(f.endswith('.py') for f in files)}
  assert folders <= found, folders - found


def test_tpu_pod_installs_one_wheel_everywhere_and_starts_under_the_allocator():
  args = ['my-tpu', 'us-east5-a', 'configs/impact_vitb16.py', 'gs://bucket/run', '--config.model.init=gs://bucket/clip',
          '--config.data.dir=/mnt/data', '--config.train.steps=10', '--config.note=two words']
  out = subprocess.run(['bash', str(ROOT / 'launch' / 'tpu_pod.sh')] + args, env=env(DRY_RUN='1'),
                       capture_output=True, text=True, cwd='/')
  assert out.returncode == 0, out.stderr
  # the local data dir is flagged (it must exist on every worker); the gs:// init model is not
  assert '--config.data.dir is a local path' in out.stderr and 'model.init' not in out.stderr
  export, build, scp, ssh = (shlex.split(line) for line in out.stdout.splitlines())
  stage = export[1]
  assert export[0] == 'export_checkout' and build[1:4] == ['-m', 'pip', 'wheel'] and build[-1] == stage
  wheel_dir = build[build.index('--wheel-dir') + 1]
  assert scp[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp'] and '--worker=all' in scp
  assert scp[scp.index('--recurse') + 1] == os.path.dirname(wheel_dir) and 'my-tpu:' in scp
  assert ssh[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'my-tpu'] and '--worker=all' in ssh
  remote = shlex.split(ssh[ssh.index('--command') + 1])
  from designclip_jax import __version__
  wheel = f'designclip_jax-{__version__}-py3-none-any.whl'
  assert remote[:2] == ['bash', 'designclip_launch/launch/tpu_worker.sh']
  assert remote[2:] == [wheel, 'configs/impact_vitb16.py'] + args[3:]

  # the worker's part, with this environment as its venv: install the wheel, start under the allocator
  out = subprocess.run(['bash', str(ROOT / 'launch' / 'tpu_worker.sh')] + remote[2:],
                       env=env(DRY_RUN='1', DESIGNCLIP_VENV=sys.prefix), capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  install, reinstall, train = (shlex.split(line) for line in out.stdout.splitlines())
  wheel_path = str(ROOT / 'dist' / wheel)
  assert install == [f'{sys.prefix}/bin/pip', 'install', '--quiet', f'{wheel_path}[gcs,aot]']
  assert reinstall == [f'{sys.prefix}/bin/pip', 'install', '--quiet', '--force-reinstall', '--no-deps', wheel_path]
  assert train[:4] == ['env', f'LD_PRELOAD={first_choice()}', f'{sys.prefix}/bin/python', '-m']
  assert train[train.index('--workdir') + 1] == 'gs://bucket/run' and train[-1] == '--config.note=two words'


def test_shell_scripts_pass_shellcheck():
  if shutil.which('shellcheck') is None:
    pytest.skip('shellcheck not installed (Debian: apt-get install shellcheck)')
  scripts = sorted(str(p) for p in [*ROOT.glob('scripts/*.sh'), *ROOT.glob('launch/*.sh'), ROOT / '.ci' / 'run'])
  out = subprocess.run(['shellcheck', '-x', *scripts], capture_output=True, text=True, cwd=ROOT)
  assert out.returncode == 0, out.stdout[-3000:]


FAKE_GCLOUD = '''#!/usr/bin/env bash
# stands in for gcloud on a one-worker slice: scp copies into $FAKE_HOME, ssh runs --command there (dry run)
echo "$*" >> "$FAKE_HOME/gcloud.log"
case $4 in
  scp) cp -r "$6" "$FAKE_HOME/" ;;
  ssh) while [ "$1" != --command ]; do shift; done
       cd "$FAKE_HOME" && HOME=$FAKE_HOME DRY_RUN=1 bash -c "$2" ;;
esac
'''


@pytest.mark.slow
def test_tpu_pod_builds_the_wheel_and_the_worker_installs_it(tmp_path):
  """The real build (pip wheel of the checkout's files) and copy, with gcloud replaced by a local stand-in."""
  (tmp_path / 'bin').mkdir()
  (tmp_path / 'home').mkdir()
  (tmp_path / 'bin' / 'gcloud').write_text(FAKE_GCLOUD)
  (tmp_path / 'bin' / 'gcloud').chmod(0o755)
  environ = env(PATH=f'{tmp_path / "bin"}:{os.environ["PATH"]}', FAKE_HOME=str(tmp_path / 'home'),
             DESIGNCLIP_VENV=sys.prefix, PYTHON=sys.executable)
  out = subprocess.run(['bash', str(ROOT / 'launch' / 'tpu_pod.sh'), 'my-tpu', 'z', 'configs/synthetic_tiny.py',
                        'gs://bucket/run'], env=environ, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  launch = tmp_path / 'home' / 'designclip_launch'
  wheels = list((launch / 'dist').glob('*.whl'))
  assert len(wheels) == 1
  with zipfile.ZipFile(wheels[0]) as wheel:
    packaged = {n for n in wheel.namelist() if n.startswith('designclip_jax/') and n.endswith('.py')}
  tracked = subprocess.run(['git', 'ls-files', 'designclip_jax/*.py'], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
  assert set(tracked) <= packaged, set(tracked) - packaged
  # the run's provenance names the checkout's commit, read from the wheel outside any git checkout
  (tmp_path / 'installed').mkdir()
  with zipfile.ZipFile(wheels[0]) as wheel:
    wheel.extractall(tmp_path / 'installed')
  described = subprocess.run(['git', 'describe', '--always', '--dirty', '--abbrev=12'], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
  commit = subprocess.run([sys.executable, '-c', 'from designclip_jax import provenance; '
                           'print(provenance.code_identity()["commit"])'], cwd=tmp_path / 'installed',
                          env=env(PYTHONPATH=str(tmp_path / 'installed')), capture_output=True, text=True, check=True)
  assert commit.stdout.strip() == described
  assert (launch / 'configs' / 'synthetic_tiny.py').read_bytes() == (ROOT / 'configs' / 'synthetic_tiny.py').read_bytes()
  # the worker ran from the copy: the copied wheel, then training under the allocator
  train = shlex.split(out.stdout.splitlines()[-1])
  assert train[:3] == ['env', f'LD_PRELOAD={first_choice()}', f'{sys.prefix}/bin/python']
  assert train[train.index('--config') + 1] == str(launch / 'configs' / 'synthetic_tiny.py')
  assert f'{launch}/dist/{wheels[0].name}' in out.stdout
