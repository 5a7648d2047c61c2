"""One process of a 2-process jax.distributed run (started by test_search.py): the search CLI with the given
arguments, on 2 CPU devices."""

import os
import sys

os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
os.environ['JAX_PLATFORMS'] = 'cpu'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from designclip_jax.search.__main__ import main  # noqa: E402

if __name__ == '__main__':
  port, process_id, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=2, process_id=process_id,
                             initialization_timeout=60, heartbeat_timeout_seconds=10)
  main(argv)
  print('done', jax.process_index(), jax.device_count(), flush=True)
