"""Runs one training phase (or a chain of them) from an ml_collections config.

python launch.py --config=configs/quickstart.py [--workdir=runs/quickstart]
python launch.py --config=configs/phase3_synthetic.py:smoke --config.heads="('tconv',)"
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file('config', None, 'Config file (path[:smoke]).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Run folder (default: runs/<config.name>).')
flags.mark_flags_as_required(['config'])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO; we print our own progress
  from gta_jax import train  # after flag parsing, so --help is fast
  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir or os.path.join('runs', config.name)
  train.train_and_evaluate(config, workdir)


def run():
  from gta_jax.input_pipeline import DatasetNotPrepared
  try:
    app.run(main)
  except AttributeError as e:  # a mistyped --config.<key>: ml_collections's "did you mean" error
    sys.exit(f'error: bad config override: {e}')
  except (DatasetNotPrepared, FileNotFoundError, FloatingPointError, KeyError, ValueError) as e:
    # Our own errors name the file, key or value and what to do; the traceback adds nothing for a
    # user. GTA_JAX_TRACEBACK=1 shows it.
    if os.environ.get('GTA_JAX_TRACEBACK'):
      raise
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    sys.exit(f'error: {message}')


if __name__ == '__main__':
  run()
