"""Two jax.distributed processes of one training job, one started with another config: both stop at start with
the same one line naming the odd process and the setting (a job whose hosts disagree would otherwise train apart
or hang in a collective). Hosts may differ in their own settings (process id, Grain workers): the 2-process
tests in test_train.py run with different data.worker_count and pass the check."""

import os
import subprocess
import sys

from tests.processes import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_host_with_another_config_is_refused_by_name(synthetic_data, tmp_path):
  _, _, data_dir = synthetic_data
  port = free_port()
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu')
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'designclip_jax.train', '--config', f'{ROOT}/tests/train_helpers.py:{data_dir}',
       '--workdir', str(tmp_path / 'run'), '--config.distributed.enabled=True',
       f'--config.distributed.coordinator_address=127.0.0.1:{port}', '--config.distributed.num_processes=2',
       f'--config.distributed.process_id={i}', f'--config.data.worker_count={i}',
       *(['--config.train.steps=9'] if i == 1 else [])],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    outputs = [p.communicate(timeout=240) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 2, (out[-2000:], err[-3000:])
    assert 'Traceback' not in err, err[-3000:]
  errors = [[line for line in err.splitlines() if line.startswith('error:')] for _, err in outputs]
  assert errors[0] == errors[1] and len(errors[0]) == 1, errors
  line = errors[0][0]
  assert 'process 1 ' in line and 'train.steps=9 vs 8' in line and 'against process 0' in line, line
  assert 'worker_count' not in line and 'process_id' not in line  # each host's own settings are not compared
  assert not (tmp_path / 'run' / 'checkpoints').exists()  # refused before anything was built
