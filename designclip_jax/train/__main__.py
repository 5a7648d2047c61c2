"""python -m designclip_jax.train --config configs/FILE.py --workdir DIR [--config.train.steps=N ...]

WORKDIR may be a bucket URL (gs://bucket/run). After a preemption (SIGTERM on any process) every process
saves the same step and exits with status 75 (train.loop.PREEMPTED_EXIT_CODE): requeue the job on it and the
rerun resumes from that checkpoint."""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from designclip_jax import allocator
from designclip_jax.provenance import HostsDisagreeError
from designclip_jax.train.loop import PREEMPTED_EXIT_CODE, train_and_evaluate
from designclip_jax.weights.model_spec import ResumeMismatchError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Python config file with get_config().', lock_config=True)
flags.DEFINE_string('workdir', None, 'Run directory (local or gs://): checkpoints, metrics, TensorBoard; '
                    'resumed if it holds checkpoints.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  print(f'allocator: {allocator.describe()}', flush=True)  # scripts/allocator.sh preloads a fast one
  logging.set_verbosity(logging.WARNING)  # keep Orbax's per-save INFO lines out of the progress bar
  try:
    result = train_and_evaluate(FLAGS.config, FLAGS.workdir)
  # a data set or checkpoint path that is not there, hosts that run different code, config or data, a config that
  # contradicts the run it resumes: one line, not a traceback
  except (FileNotFoundError, HostsDisagreeError, ResumeMismatchError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  if result['preempted']:
    print(f'preempted: saved step {result["step"]}; exit status {PREEMPTED_EXIT_CODE} (requeue to resume)',
          flush=True)
    sys.exit(PREEMPTED_EXIT_CODE)


if __name__ == '__main__':
  app.run(main)
