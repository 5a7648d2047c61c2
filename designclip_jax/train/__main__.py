"""python -m designclip_jax.train --config configs/FILE.py --workdir DIR [--config.train.steps=N ...]"""

from absl import app, flags, logging
from ml_collections import config_flags

from designclip_jax.train.loop import train_and_evaluate

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Python config file with get_config().', lock_config=True)
flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, metrics, TensorBoard; resumed if it exists.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # keep Orbax's per-save INFO lines out of the progress bar
  train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
