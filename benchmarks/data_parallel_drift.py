"""How far a run on several devices drifts from the same run on one, against the drift that float32
rounding alone causes on one device.

python benchmarks/data_parallel_drift.py --json out.json [--devices 4] [--processes 2]
    [--data_dir DIR]

Runs the phase-I smoke config (the smoke data, 30 steps) in this one process, whose CPU is split
into --devices XLA devices: (a) on a mesh of 1 device, (b) on all devices, (c) on 1 device with
the images of every batch in reverse order (the same mathematics, another summation order);
with --processes N also (d) as N local processes of one device each (launch.py, jax.distributed
over gloo). Prints, per logged loss, the relative difference of (b), (c) and (d) from (a). Compare
(d) with --devices 1: each of its processes, like (a) then, has one device (XLA's CPU threading
depends on a process's device count).
"""
import os

from absl import app
from absl import flags

flags.DEFINE_string('json', None, 'write the results here')
flags.DEFINE_string('data_dir', '/tmp/gta_jax_smoke_tfds', 'TFDS data_dir for the smoke data')
flags.DEFINE_integer('devices', 4, 'XLA CPU devices to split this process into')
flags.DEFINE_integer('processes', 0, 'also run as this many local processes (0: not)')
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
  import socket
  import subprocess
  import sys

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
  if FLAGS.processes:
    name = f'{FLAGS.processes}_processes'
    workdir = pathlib.Path(FLAGS.workdir) / name
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    root = pathlib.Path(__file__).resolve().parents[1]
    with socket.socket() as s:  # a free port for the coordinator
      s.bind(('127.0.0.1', 0))
      port = s.getsockname()[1]
    # As tests/io/test_distributed.py launches them (the overrides of sharded_checks.smoke_config).
    command = [sys.executable, str(root / 'launch.py'),
               f'--config={root / "configs" / "phase1_synthetic.py"}:smoke',
               f'--config.data.data_dir={FLAGS.data_dir}', "--config.evals.test.modes=('clean',)",
               '--config.data.real_softening=0.0', '--config.data.photometric_jitter=0.0',
               '--config.log_every_steps=1', f'--workdir={workdir / "run"}',
               f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={FLAGS.processes}']
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
    processes = [subprocess.Popen(command + [f'--process_id={i}'], env=env,
                                  stdout=open(workdir / f'process_{i}.log', 'w'),
                                  stderr=subprocess.STDOUT) for i in range(FLAGS.processes)]
    if any(p.wait() for p in processes):
      raise SystemExit(f'a process failed; see {workdir}/process_*.log')
    lines = [json.loads(line) for line in
             (workdir / 'run' / 'metrics.jsonl').read_text().splitlines()]
    runs[name] = {(r['step'], k): v for r in lines for k, v in r.items() if 'loss' in k}
  reference = runs['one_device']
  drift = {}
  for name in [n for n in runs if n != 'one_device']:
    relative = {key: abs(runs[name][key] - value) / abs(value) for key, value in reference.items()}
    train_first = [v for (step, k), v in relative.items() if k.startswith('train') and step <= 15]
    train_second = [v for (step, k), v in relative.items() if k.startswith('train') and step > 15]
    train = [relative[key] for key in sorted(relative) if key[1].startswith('train')]
    later = [key for key in reference if key[0] > 5 and key[1].startswith('train')]
    drift[name] = {'train_loss_epoch_1_max': float(np.max(train_first)),
                   'train_loss_epoch_2_max': float(np.max(train_second)),
                   'val_loss': [relative[key] for key in sorted(relative) if 'val' in key[1]],
                   'train_loss_per_step': train,
                   'first_step_above_1e-5': next((i + 1 for i, v in enumerate(train) if v > 1e-5),
                                                 None),
                   'mean_train_loss_after_step_5': abs(
                       np.mean([runs[name][k] for k in later]) / np.mean(
                           [reference[k] for k in later]) - 1)}
    print(f'{name}: {drift[name]}', flush=True)
  common.write_json(FLAGS.json, {'relative_difference_from_one_device': drift,
                                 'devices': FLAGS.devices, 'processes': FLAGS.processes,
                                 'machine': common.machine()})


if __name__ == '__main__':
  app.run(main)
