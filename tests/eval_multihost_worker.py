"""One process of a 2-process jax.distributed run (started by test_eval_multihost.py): the eval CLI with
the given arguments, or with ``--train DATA_DIR WORKDIR`` a short training run with periodic and final
evaluation."""

import os
import sys

os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
os.environ['JAX_PLATFORMS'] = 'cpu'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()

import jax  # noqa: E402

from designclip_jax.eval.__main__ import main  # noqa: E402

FINAL_TASKS = ('zero_shot', 'image_retrieval', 'multimodal_retrieval')


def train(data_dir: str, workdir: str) -> None:
  from designclip_jax.train.loop import train_and_evaluate
  from tests.train_helpers import micro_config
  config = micro_config(data_dir, steps=2, checkpoint_every=2, eval_every=2)
  config.eval.tasks = FINAL_TASKS
  config.eval.periodic_tasks = ('zero_shot',)
  train_and_evaluate(config, workdir)


if __name__ == '__main__':
  port, process_id, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=2, process_id=process_id,
                             initialization_timeout=60, heartbeat_timeout_seconds=10)
  if argv[0] == '--train':
    train(*argv[1:])
  else:
    main(argv)
  print('done', jax.process_index(), jax.device_count(), flush=True)
