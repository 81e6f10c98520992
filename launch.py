"""Runs one training phase (or a chain of them) from an ml_collections config.

python launch.py --config=configs/quickstart.py [--workdir=runs/quickstart]
python launch.py --config=configs/phase3_synthetic.py:smoke --config.sources="('tconv',)"

Every device of the machine is used (batches split over them). Several processes (hosts): give
each the same --coordinator_address and --num_processes and its own --process_id (README,
"Scaling out"); under SLURM or Open MPI these are found without flags.
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file('config', None, 'Config file (path[:smoke]).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Run folder (default: runs/<config.name>).')
flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0 (several processes).')
flags.DEFINE_integer('num_processes', None, 'How many processes take part (several processes).')
flags.DEFINE_integer('process_id', None, "This process's index in [0, num_processes).")
flags.mark_flags_as_required(['config'])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO; we print our own progress
  from gta_jax import distributed, train  # after flag parsing, so --help is fast
  distributed.initialize(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes,
                         flags.FLAGS.process_id)  # before any array exists
  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir or os.path.join('runs', config.name)
  train.train_and_evaluate(config, workdir)


def parse_flags(argv):
  """absl's flag parsing, with a mistyped --config.<key> (ml_collections raises AttributeError
  with a "did you mean" hint while the flags are parsed) as a one-line error."""
  try:
    return flags.FLAGS(argv)
  except AttributeError as e:
    message = str(e.args[0] if e.args else e).replace('\\n', ' ').replace('\n', ' ')
    message = message.strip('\'').replace("\\'", "'")
    sys.exit(f'error: bad config override: {message}')
  except flags.Error as e:
    sys.exit(f'error: {e}')


def run():
  from gta_jax.errors import UserError
  try:
    app.run(main, flags_parser=parse_flags)
  except UserError as e:
    # Our own errors name the file, key or value and what to do; the traceback adds nothing for
    # a user. Anything else is a bug and keeps its traceback. GTA_JAX_TRACEBACK=1 shows it here too.
    if os.environ.get('GTA_JAX_TRACEBACK'):
      raise
    sys.exit(f'error: {e}')
  except KeyboardInterrupt:
    sys.exit('interrupted: the last checkpoint is saved; run the same command to resume.')


if __name__ == '__main__':
  run()
