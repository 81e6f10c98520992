"""Runs one training phase (or a chain of them) from an ml_collections config.

python launch.py --config=configs/quickstart.py [--workdir=runs/quickstart]
python launch.py --config=configs/phase3_synthetic.py:smoke --config.sources="('tconv',)"

Every device of the machine is used (batches split over them). Several processes (hosts): give
each the same --coordinator_address and --num_processes and its own --process_id (docs/training.md,
scaling out); under SLURM or Open MPI these are found without flags.
"""
import os

from absl import flags
from absl import logging
from ml_collections import config_flags

from gta_jax.tools import cli

config_flags.DEFINE_config_file('config', None, 'Config file (path[:smoke]).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Run folder (default: runs/<config.name>).')
flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0 (several processes).')
flags.DEFINE_integer('num_processes', None, 'How many processes take part (several processes).')
flags.DEFINE_integer('process_id', None, "This process's index in [0, num_processes).")
flags.mark_flags_as_required(['config'])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO; we print our own progress
  from gta_jax import train  # after flag parsing, so --help is fast
  from gta_jax.io import distributed
  distributed.initialize(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes,
                         flags.FLAGS.process_id)  # before any array exists
  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir or os.path.join('runs', config.name)
  train.train_and_evaluate(config, workdir)


def run():
  cli.run(main)


if __name__ == '__main__':
  run()
