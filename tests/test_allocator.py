"""The fast allocator: scripts/allocator.sh finds and preloads it, designclip_jax.allocator names the library
that serves malloc, training logs it, Grain's and the ingest's worker processes map it (read from their
/proc/PID/maps), and the launch scripts start Python under it (launch/tpu_pod.sh through its dry run)."""

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
HELPER = ROOT / 'scripts' / 'allocator.sh'

pytestmark = pytest.mark.skipif(sys.platform != 'linux', reason='LD_PRELOAD and /proc/PID/maps are Linux')


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if k not in ('LD_PRELOAD', 'DESIGNCLIP_ALLOCATOR', 'DRY_RUN')}
  env.update(extra)
  return env


def _shell(script, cwd=None, **env):
  """Run ``script`` in bash after sourcing the helper; (exit status, stdout, stderr)."""
  out = subprocess.run(['bash', '-c', f'set -euo pipefail; source {shlex.quote(str(HELPER))}; {script}'],
                       env=_env(**env), capture_output=True, text=True, cwd=cwd)
  return out.returncode, out.stdout.strip(), out.stderr.strip()


def _library(name):
  status, out, _ = _shell(f'allocator_library {name} {shlex.quote(sys.prefix)}')
  return out if status == 0 else None


def _mimalloc():
  lib = _library('mimalloc')
  assert lib, f'no libmimalloc.so.3 in {sys.prefix}: cmeel-mimalloc is a default dependency (pip install -e .)'
  return lib


def _describe(**env):
  return subprocess.run([sys.executable, '-c', 'from designclip_jax import allocator; print(allocator.describe())'],
                        env=_env(**env), capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize('name', ['mimalloc', 'tcmalloc', 'jemalloc'])
def test_the_preloaded_library_is_the_one_named(name):
  lib = _mimalloc() if name == 'mimalloc' else _library(name)
  if lib is None:
    pytest.skip(f'{name} not installed here (Debian: apt-get install libtcmalloc-minimal4 libjemalloc2)')
  assert os.path.isabs(lib)
  assert _describe(LD_PRELOAD=lib) == f'{name} ({os.path.realpath(lib)})'


def test_without_a_preload_glibc_serves_malloc():
  assert os.confstr('CS_GNU_LIBC_VERSION').startswith('glibc')
  described = _describe()
  assert described.startswith('glibc (') and os.path.basename(described[7:-1]).startswith('libc'), described


def test_use_fast_allocator_prefers_mimalloc_and_keeps_other_preloads():
  lib = _mimalloc()
  assert _shell(f'use_fast_allocator {shlex.quote(sys.prefix)}; echo "$LD_PRELOAD"')[1] == lib
  # relative venv paths become absolute: a child that changes directory still finds the library
  venv = pathlib.Path(sys.prefix)
  assert _shell(f'use_fast_allocator {shlex.quote(venv.name)}; echo "$LD_PRELOAD"', cwd=venv.parent)[1] == lib
  assert _shell(f'use_fast_allocator {shlex.quote(sys.prefix)}; echo "$LD_PRELOAD"',
                LD_PRELOAD='/opt/x/libother.so')[1] == f'{lib}:/opt/x/libother.so'


@pytest.mark.parametrize('env', [{'DESIGNCLIP_ALLOCATOR': 'glibc'},
                                 {'LD_PRELOAD': '/opt/x/libjemalloc.so.2'}])
def test_use_fast_allocator_leaves_a_choice_alone(env):
  status, out, _ = _shell(f'use_fast_allocator {shlex.quote(sys.prefix)}; echo "${{LD_PRELOAD:-unset}}"', **env)
  assert status == 0 and out == env.get('LD_PRELOAD', 'unset')


def test_asked_for_by_name():
  if _library('jemalloc') is None:
    pytest.skip('jemalloc not installed here')
  status, out, _ = _shell(f'use_fast_allocator {shlex.quote(sys.prefix)}; echo "$LD_PRELOAD"',
                          DESIGNCLIP_ALLOCATOR='jemalloc')
  assert (status, out) == (0, _library('jemalloc'))


def test_with_none_found_python_runs_unchanged(tmp_path):
  # an environment without the wheel, and only the wheel's allocator asked for: nothing to preload
  script = (f'ALLOCATOR_PREFERENCE=(mimalloc); use_fast_allocator {shlex.quote(str(tmp_path))}; '
            f'echo "${{LD_PRELOAD:-unset}}"; {shlex.quote(sys.executable)} -c '
            '"from designclip_jax import allocator; print(allocator.describe())"')
  status, out, _ = _shell(script)
  assert status == 0
  preload, described = out.splitlines()
  assert preload == 'unset' and described.startswith('glibc ('), out
  status, out, err = _shell(f'use_fast_allocator {shlex.quote(str(tmp_path))}; echo "${{LD_PRELOAD:-unset}}"',
                            DESIGNCLIP_ALLOCATOR='nosuchmalloc')
  assert (status, out) == (0, 'unset') and 'nosuchmalloc' in err


WORKER_MAPS = textwrap.dedent('''
  import json, os, sys
  import psutil
  from absl import flags
  flags.FLAGS.mark_as_parsed()
  from designclip_jax.data import parallel, pipeline
  from designclip_jax.data.tokenizer import Tokenizer

  def mapped(pid):  # the files a process has mapped
    with open(f'/proc/{pid}/maps') as f:
      return sorted({line.split()[5] for line in f if len(line.split()) == 6})

  data = sys.argv[1]
  opts = pipeline.TrainOptions(image_size=32, global_batch=8, worker_count=1)
  it = iter(pipeline.train_dataset(data, opts, Tokenizer.from_pretrained(pipeline.tokenizer_dir(data), 32)))
  next(it)  # the workers are up and have produced a batch
  grain = {p.pid: mapped(p.pid) for p in psutil.Process().children(recursive=True)}
  del it
  pids = parallel.ordered_map(os.readlink, ['/proc/self'] * 4, 2)  # the ingest's pool; each worker's pid
  first = int(next(pids))
  ingest = {first: mapped(first)}
  list(pids)
  print(json.dumps({'grain': grain, 'ingest': ingest}))
''')


def test_grain_and_ingest_workers_run_under_the_preloaded_allocator(synthetic_data):
  lib = os.path.realpath(_mimalloc())
  out = subprocess.run([sys.executable, '-c', WORKER_MAPS, synthetic_data[2]], env=_env(LD_PRELOAD=_mimalloc()),
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  workers = json.loads(out.stdout.strip().splitlines()[-1])
  assert len(workers['grain']) >= 1 and len(workers['ingest']) == 1, workers.keys()
  for kind in ('grain', 'ingest'):
    for pid, files in workers[kind].items():
      assert lib in files, f'{kind} worker {pid} does not map {lib}'
      assert not any(os.path.basename(f).startswith(('libtcmalloc', 'libjemalloc')) for f in files)


def test_training_logs_the_allocator_it_runs_under(tmp_path):
  if not (ROOT / '.venv' / 'bin' / 'python').exists():
    pytest.skip('launch/local.sh runs .venv/bin/python (scripts/test.sh makes it)')
  # a data set that is not there: training stops with one line right after logging the allocator
  out = subprocess.run(['bash', str(ROOT / 'launch' / 'local.sh'), 'configs/synthetic_tiny.py', str(tmp_path / 'run'),
                        f'--config.data.dir={tmp_path / "none"}'], env=_env(), capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 2, out.stderr[-3000:]
  lib = _shell(f'use_fast_allocator {shlex.quote(str(ROOT / ".venv"))}; echo "$LD_PRELOAD"')[1]
  assert out.stdout.splitlines()[0] == f'allocator: mimalloc ({os.path.realpath(lib)})'


def test_tpu_pod_installs_one_wheel_everywhere_and_starts_under_the_allocator():
  args = ['my-tpu', 'us-east5-a', 'configs/impact_vitb16.py', 'gs://bucket/run', '--config.model.init=gs://bucket/clip',
          '--config.data.dir=/mnt/data', '--config.train.steps=10', '--config.note=two words']
  out = subprocess.run(['bash', str(ROOT / 'launch' / 'tpu_pod.sh')] + args, env=_env(DRY_RUN='1'),
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
                       env=_env(DRY_RUN='1', DESIGNCLIP_VENV=sys.prefix), capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  install, reinstall, train = (shlex.split(line) for line in out.stdout.splitlines())
  wheel_path = str(ROOT / 'dist' / wheel)
  assert install == [f'{sys.prefix}/bin/pip', 'install', '--quiet', f'{wheel_path}[gcs,aot]']
  assert reinstall == [f'{sys.prefix}/bin/pip', 'install', '--quiet', '--force-reinstall', '--no-deps', wheel_path]
  assert train[:4] == ['env', f'LD_PRELOAD={_mimalloc()}', f'{sys.prefix}/bin/python', '-m']
  assert train[train.index('--workdir') + 1] == 'gs://bucket/run' and train[-1] == '--config.note=two words'


def test_shell_scripts_pass_shellcheck():
  if shutil.which('shellcheck') is None:
    pytest.skip('shellcheck not installed (Debian: apt-get install shellcheck)')
  scripts = sorted(str(p) for p in [*ROOT.glob('scripts/*.sh'), *ROOT.glob('launch/*.sh'), ROOT / '.ci' / 'run'])
  out = subprocess.run(['shellcheck', '-x', *scripts], capture_output=True, text=True, cwd=ROOT)
  assert out.returncode == 0, out.stdout[-3000:]
