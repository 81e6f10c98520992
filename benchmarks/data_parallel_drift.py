"""How far a run on several devices drifts from the same run on one, against the drift that float32
rounding alone causes on one device.

python benchmarks/data_parallel_drift.py --json out.json [--devices 4] [--data_dir DIR]

Runs the phase-I smoke config (the smoke data, 30 steps) in this one process, whose CPU is split
into --devices XLA devices: (a) on a mesh of 1 device, (b) on all devices, (c) on 1 device with
the images of every batch in reverse order (the same mathematics, another summation order).
Prints, per logged loss, the relative difference of (b) and (c) from (a).
"""
import os

from absl import app
from absl import flags

flags.DEFINE_string('json', None, 'write the results here')
flags.DEFINE_string('data_dir', '/tmp/gta_jax_smoke_tfds', 'TFDS data_dir for the smoke data')
flags.DEFINE_integer('devices', 4, 'XLA CPU devices to split this process into')
flags.DEFINE_string('workdir', '/tmp/gta_jax_drift', 'scratch folder for the three runs')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' --xla_force_host_platform_device_count={FLAGS.devices}')
  import importlib.util  # the tests' helper, by its path (the tests are not a package)
  import json
  import pathlib
  import shutil

  import jax
  import numpy as np

  import common  # benchmarks/common.py
  from gta_jax import train
  from gta_jax.data import pipeline
  from gta_jax.io import distributed
  path = pathlib.Path(__file__).resolve().parents[1] / 'tests' / 'sharded_checks.py'
  spec = importlib.util.spec_from_file_location('sharded_checks', path)
  sharded_checks = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(sharded_checks)

  pipeline.load_builder(pipeline.BUILTIN, 'smoke', FLAGS.data_dir)
  stack = pipeline._stack
  runs = {}
  for name, devices, reverse in (('one_device', 1, False), ('all_devices', FLAGS.devices, False),
                                 ('one_device_reversed_batches', 1, True)):
    pipeline._stack = (lambda examples: stack(examples[::-1])) if reverse else stack
    workdir = pathlib.Path(FLAGS.workdir) / name
    shutil.rmtree(workdir, ignore_errors=True)
    with distributed.using_devices(jax.devices()[:devices]):
      train.train_and_evaluate(sharded_checks.smoke_config('phase1_synthetic', FLAGS.data_dir),
                               workdir)
    lines = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
    runs[name] = {(r['step'], k): v for r in lines for k, v in r.items() if 'loss' in k}
  pipeline._stack = stack
  reference = runs['one_device']
  drift = {}
  for name in ('all_devices', 'one_device_reversed_batches'):
    relative = {key: abs(runs[name][key] - value) / abs(value) for key, value in reference.items()}
    train_first = [v for (step, k), v in relative.items() if k.startswith('train') and step <= 15]
    train_second = [v for (step, k), v in relative.items() if k.startswith('train') and step > 15]
    drift[name] = {'train_loss_epoch_1_max': float(np.max(train_first)),
                   'train_loss_epoch_2_max': float(np.max(train_second)),
                   'val_loss': [relative[key] for key in sorted(relative) if 'val' in key[1]]}
    print(f'{name}: {drift[name]}', flush=True)
  common.write_json(FLAGS.json, {'relative_difference_from_one_device': drift,
                                 'devices': FLAGS.devices, 'machine': common.machine()})


if __name__ == '__main__':
  app.run(main)
