"""The fast allocator: scripts/allocator.sh finds and preloads it, designclip_jax.allocator names the library
that serves malloc, training logs it, and Grain's and the ingest's worker processes map it (read from their
/proc/PID/maps)."""

import json
import os
import pathlib
import shlex
import subprocess
import sys
import textwrap

import pytest

from tests.launch_helpers import ROOT, env, first_choice, library, mimalloc, shell

pytestmark = pytest.mark.skipif(sys.platform != 'linux', reason='LD_PRELOAD and /proc/PID/maps are Linux')


def _describe(**extra):
  return subprocess.run([sys.executable, '-c', 'from designclip_jax import allocator; print(allocator.describe())'],
                        env=env(**extra), capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize('name', ['mimalloc', 'tcmalloc', 'jemalloc'])
def test_the_preloaded_library_is_the_one_named(name):
  lib = mimalloc() if name == 'mimalloc' else library(name)
  if lib is None:
    pytest.skip(f'{name} not installed here (Debian: apt-get install libtcmalloc-minimal4 libjemalloc2)')
  assert os.path.isabs(lib)
  assert _describe(LD_PRELOAD=lib) == f'{name} ({os.path.realpath(lib)})'


def test_without_a_preload_glibc_serves_malloc():
  assert os.confstr('CS_GNU_LIBC_VERSION').startswith('glibc')
  described = _describe()
  assert described.startswith('glibc (') and os.path.basename(described[7:-1]).startswith('libc'), described


def test_use_fast_allocator_prefers_tcmalloc_then_mimalloc_and_keeps_other_preloads():
  lib = first_choice()
  assert shell(f'use_fast_allocator {shlex.quote(sys.prefix)}; echo "$LD_PRELOAD"')[1] == lib
  # relative venv paths become absolute: a child that changes directory still finds the library
  venv = pathlib.Path(sys.prefix)
  assert shell(f'use_fast_allocator {shlex.quote(venv.name)}; echo "$LD_PRELOAD"', cwd=venv.parent)[1] == lib
  assert shell(f'use_fast_allocator {shlex.quote(sys.prefix)}; echo "$LD_PRELOAD"',
                LD_PRELOAD='/opt/x/libother.so')[1] == f'{lib}:/opt/x/libother.so'


@pytest.mark.parametrize('env', [{'DESIGNCLIP_ALLOCATOR': 'glibc'},
                                 {'LD_PRELOAD': '/opt/x/libjemalloc.so.2'}])
def test_use_fast_allocator_leaves_a_choice_alone(env):
  status, out, _ = shell(f'use_fast_allocator {shlex.quote(sys.prefix)}; echo "${{LD_PRELOAD:-unset}}"', **env)
  assert status == 0 and out == env.get('LD_PRELOAD', 'unset')


@pytest.mark.parametrize('name', ['mimalloc', 'jemalloc'])
def test_asked_for_by_name(name):
  lib = mimalloc() if name == 'mimalloc' else library(name)
  if lib is None:
    pytest.skip(f'{name} not installed here')
  status, out, _ = shell(f'use_fast_allocator {shlex.quote(sys.prefix)}; echo "$LD_PRELOAD"', DESIGNCLIP_ALLOCATOR=name)
  assert (status, out) == (0, lib)


def test_with_none_found_python_runs_unchanged(tmp_path):
  # an environment without the wheel, and only the wheel's allocator asked for: nothing to preload
  script = (f'ALLOCATOR_PREFERENCE=(mimalloc); use_fast_allocator {shlex.quote(str(tmp_path))}; '
            f'echo "${{LD_PRELOAD:-unset}}"; {shlex.quote(sys.executable)} -c '
            '"from designclip_jax import allocator; print(allocator.describe())"')
  status, out, _ = shell(script)
  assert status == 0
  preload, described = out.splitlines()
  assert preload == 'unset' and described.startswith('glibc ('), out
  status, out, err = shell(f'use_fast_allocator {shlex.quote(str(tmp_path))}; echo "${{LD_PRELOAD:-unset}}"',
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
  lib = os.path.realpath(mimalloc())
  out = subprocess.run([sys.executable, '-c', WORKER_MAPS, synthetic_data[2]], env=env(LD_PRELOAD=mimalloc()),
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
                        f'--config.data.dir={tmp_path / "none"}'], env=env(), capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 2, out.stderr[-3000:]
  lib = shell(f'use_fast_allocator {shlex.quote(str(ROOT / ".venv"))}; echo "$LD_PRELOAD"')[1]
  name = 'tcmalloc' if 'tcmalloc' in lib else 'mimalloc'
  assert out.stdout.splitlines()[0] == f'allocator: {name} ({os.path.realpath(lib)})'
