"""python -m designclip_jax.aot --config configs/FILE.py [--topology v5e:4x4|v4:2x2x4|cpu] [--config.x=y ...]
[--output report.json]

Compiles the config's real train step for a Cloud TPU topology (default: the config's ``hardware``) and
prints per-chip memory against HBM, FLOPs per step and a roofline bound. Exit status 0 when it fits, 1
when it does not (with the knobs to turn), 2 when it cannot be compiled as asked.
"""

import os
import sys
import traceback

os.environ.setdefault('JAX_PLATFORMS', 'cpu')  # compiling needs no accelerator; do not probe for one

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from designclip_jax import aot  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Python config file with get_config().', lock_config=True)
flags.DEFINE_string('topology', None, "TPU topology ('v5e:4x4', 'v4:2x2x4', 'v5p:2x2x2', ...) or 'cpu' "
                    "(this machine's devices); default: the config's hardware")
flags.DEFINE_string('output', None, 'Write the report as JSON here.')
flags.mark_flags_as_required(['config'])


def main(argv):
  del argv
  name = os.path.basename(FLAGS['config'].config_filename or '')
  try:
    report = aot.compile_config(FLAGS.config, FLAGS.topology, config_name=name)
  except aot.AotError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except Exception:  # pylint: disable=broad-except
    # any other failure (a bad checkpoint, a compiler error) must not read as 'does not fit' (status 1)
    traceback.print_exc()
    print(f'error: {name} could not be compiled (see above)', file=sys.stderr)
    return 2
  print(report.table())
  if FLAGS.output:
    aot.write_json(report, FLAGS.output)
  if not report.fits:
    print(f'error: {name} does not fit {report.topology}: {report.per_chip_bytes["total"] / aot.GIB:.2f} GiB '
          f'per chip > {report.hbm_bytes_per_chip / aot.GIB:.2f} GiB; turn one of: '
          + '; '.join(a.split(':')[0] for a in report.advice), file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  app.run(lambda argv: sys.exit(main(argv)))
