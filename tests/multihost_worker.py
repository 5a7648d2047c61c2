"""One process of a 2-process jax.distributed training run (started by test_train.py)."""

import os
import sys

os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
os.environ['JAX_PLATFORMS'] = 'cpu'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()

import jax  # noqa: E402

from designclip_jax.train.loop import train_and_evaluate  # noqa: E402
from tests.train_helpers import micro_config  # noqa: E402


def main():
  data_dir, workdir, port, process_id = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=2, process_id=process_id,
                             initialization_timeout=60, heartbeat_timeout_seconds=10)
  config = micro_config(data_dir, steps=3, checkpoint_every=3)
  result = train_and_evaluate(config, workdir)
  print('done', jax.process_index(), jax.device_count(), result['step'], flush=True)


if __name__ == '__main__':
  main()
