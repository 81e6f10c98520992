"""Data parallelism: 4 CPU devices (XLA_FLAGS) and 2 processes (jax.distributed over gloo) against
1 device.

What "equal" means here. One step: the loss, every gradient, the BatchNorm statistics and every
score agree to float32 rounding (the global batch's sums are added in another order). A run: its
first 5 training losses agree within 1e-5; later, float32 rounding grows step by step (Adam
divides near-zero gradients by their own size, and the biases before BatchNorm have gradients
that are zero but for rounding), so later each loss agrees within 5e-2 and the mean of the
later training losses within 1e-2: reordering the images of each batch on one device moved them
by up to 1.7e-3 in the runs measured (docs/benchmarks.md, data parallelism); on the content-matched
data (dataset version 2, a batch holds each crop beside its near copies) single losses at steps
19-20 differed by 1.0e-2 and 2.1e-2 in two runs. The size of such drift depends on the data and
the CPU.

Two processes are the same case (docs/research/2026-12-07-two-process-one-step.md). One step
agrees with one process as closely as 4 devices do: loss 8.6e-8 relative, gradients within
2.2e-6 of the largest (4 devices: 3.2e-6), BatchNorm statistics within 6e-8 (one float32 ulp at
their largest, 0.91), scores identical; reversing the batch's images on one device moves the
gradients by 5.5e-6 of the largest. The smoke run on
2 processes is deterministic (twice, and killed and resumed, bit for bit the same) and its
training losses agree with one process within 1.1e-7 up to step 16, then drift: 1e-5 at step 19,
1.9e-3 at step 30, validation 4.1e-8 and 4.3e-4 (epochs 1 and 2), where reversed batches on one
device drift from step 14, to 2.0e-2 and 1.0e-3.
"""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT  # noqa: E402
from gta_jax import errors
from gta_jax import train
from gta_jax.data import augment
from gta_jax.data import pipeline
from gta_jax.io import distributed
import sharded_checks  # noqa: E402

FIRST_STEPS, FIRST_STEPS_RTOL = 5, 1e-5
# Later steps drift chaotically in float32 (docs/training.md, scaling out), by an amount that depends on
# the machine: on 2026-12-02's 2-core EPYC one step-20 loss differed by 7.0e-2 at the commit
# that had passed with 5e-2 elsewhere (same numbers twice); the mean stays within 1e-2.
LATER_RTOL, LATER_MEAN_RTOL = 1e-1, 1e-2
TEST_ACCURACY_IMAGES = 5  # of 120; 4 were seen on that machine, 2 on dataset version 2 before


def _environment(devices: int = 1, onednn: bool = True) -> dict:
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  if not onednn:
    env['GTA_JAX_ONEDNN'] = '0'  # the pure-XLA convolutions (gta_jax/models/onednn.py)
  return env


def _losses(workdir) -> dict:
  """metrics.jsonl -> {(step, key): value} of every loss logged."""
  records = [json.loads(line) for line in
             (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()]
  return {(r['step'], k): v for r in records for k, v in r.items() if 'loss' in k}


def _assert_same_run(got_dir, reference_dir):
  got, want = _losses(got_dir), _losses(reference_dir)
  assert got.keys() == want.keys() and len(want) == 32  # 30 steps, 2 validations
  for (step, key), value in want.items():
    rtol = FIRST_STEPS_RTOL if step <= FIRST_STEPS and key.startswith('train') else LATER_RTOL
    np.testing.assert_allclose(got[step, key], value, rtol=rtol, err_msg=f'{key} at step {step}')
  later = [k for k in want if k[0] > FIRST_STEPS and k[1].startswith('train')]
  np.testing.assert_allclose(np.mean([got[k] for k in later]), np.mean([want[k] for k in later]),
                             rtol=LATER_MEAN_RTOL, err_msg='mean of the later training losses')
  got_results = json.loads((pathlib.Path(got_dir) / 'results' / 'metrics.json').read_text())
  want_results = json.loads((pathlib.Path(reference_dir) / 'results' / 'metrics.json').read_text())
  # Every image scored once on every device count; the drifted weights may move a few scores
  # across 0.5: at most TEST_ACCURACY_IMAGES.
  got, want = got_results['clean']['detection'], want_results['clean']['detection']
  assert got['count'] == want['count'] == 120
  assert abs(got['accuracy'] - want['accuracy']) <= TEST_ACCURACY_IMAGES / want['count'] + 1e-9
  np.testing.assert_allclose(got['roc_auc'], want['roc_auc'], atol=0.02)


@pytest.fixture(scope='module')
def reference_run(smoke_data_dir, tmp_path_factory):
  """The smoke run on this process's one CPU device."""
  workdir = tmp_path_factory.mktemp('one_device') / 'run'
  train.train_and_evaluate(sharded_checks.smoke_config('phase1_synthetic', smoke_data_dir),
                           workdir)
  return workdir


def _assert_same_step(got: dict, want: dict):
  """sharded_checks.steps' arrays of one step and the validation scores on a mesh (`got`, keyed
  family/all/leaf) against 1 device (`want`, family/1/leaf): equal to float32 rounding."""
  compared = set()
  for key in want:
    family, count, leaf = key.split('/', 2)
    if count != '1':
      continue
    one, many = want[key], got[f'{family}/all/{leaf}']
    assert one.shape == many.shape, key
    if 'grads' in leaf:  # relative to the family's largest gradient: a bias before BatchNorm
      scale = max(np.abs(want[k]).max() for k in want  # has only rounding noise
                  if k.startswith(f'{family}/1/') and 'grads' in k)
      np.testing.assert_allclose(many, one, rtol=1e-4, atol=1e-5 * scale, err_msg=key)
    elif leaf.startswith('scores/') and leaf.split('/')[1] in ('label', 'source_id'):
      np.testing.assert_array_equal(many, one, err_msg=key)
    else:
      np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-6, err_msg=key)
    compared.add((family, leaf.split("'")[1] if leaf.startswith('[') else leaf.split('/')[0]))
  assert {('primary', 'grads'), ('heads', 'grads'), ('heads', 'batch_stats'), ('heads', 'loss'),
          ('primary', 'scores')} <= compared
  # every validation image scored once, padding dropped
  assert got['heads/all/scores/p_heads'].shape == (2, 80)


@pytest.mark.slow
def test_one_step_and_scores_on_4_devices_equal_1_device(smoke_data_dir, tmp_path):
  out = tmp_path / 'steps.json'
  subprocess.run([sys.executable, str(ROOT / 'tests' / 'sharded_checks.py'), 'steps',
                  smoke_data_dir, str(out)], env=_environment(4), check=True, timeout=600)
  summary = json.loads(out.read_text())
  assert summary['devices'] == 4
  assert summary['indivisible_error'] == ('config.optim.batch_size=17 does not divide by the 4 '
                                          'devices; use a multiple of 4.')
  arrays = dict(np.load(out.with_suffix('.npz')))
  _assert_same_step(arrays, arrays)


@pytest.mark.slow
def test_device_path_batches_on_4_devices_equal_1_device(smoke_data_dir, tmp_path):
  """The device data path sharded over 4 devices (each gathers and augments its rows, from the
  split held on every device or streamed) gives the batches of 1 device, bit for bit."""
  out = tmp_path / 'device_batches.npz'
  subprocess.run([sys.executable, str(ROOT / 'tests' / 'sharded_checks.py'), 'device_batches',
                  smoke_data_dir, str(out)], env=_environment(4), check=True, timeout=600)
  arrays = dict(np.load(out))
  keys = sorted(k for k in arrays if k.startswith('1/held/'))
  assert len(keys) >= 3 * 6  # 3 batches of 16 from the smoke split, 6 arrays each
  for key in keys:
    for other in ('1/streamed/', 'all/held/', 'all/streamed/'):
      np.testing.assert_array_equal(arrays[key], arrays[other + key[len('1/held/'):]], key)


@pytest.mark.slow
def test_one_step_and_scores_on_2_processes_equal_1_process(smoke_data_dir, tmp_path):
  """The step of the 4-device test on 2 processes joined by jax.distributed (one CPU device
  each, gloo collectives), against a third process of one device: the reference has the same
  XLA set-up as each of the two (one device in its process), and reads the whole batch and
  scores the split alone, which a process of a distributed run cannot (its batches hold only
  its rows; scoring joins the other process's collectives)."""
  reference, out = tmp_path / 'one' / 'steps.json', tmp_path / 'two' / 'steps.json'
  for folder in (reference.parent, out.parent):
    folder.mkdir()
  script = str(ROOT / 'tests' / 'sharded_checks.py')
  subprocess.run([sys.executable, script, 'steps', smoke_data_dir, str(reference)],
                 env=_environment(1), check=True, timeout=600)
  address = f'127.0.0.1:{_free_port()}'
  logs = [out.parent / f'process_{i}.log' for i in range(2)]
  processes = [subprocess.Popen([sys.executable, script, 'process_steps', smoke_data_dir, str(out),
                                 address, '2', str(i)], env=_environment(1),
                                stdout=open(log, 'w'), stderr=subprocess.STDOUT,
                                start_new_session=True)
               for i, log in enumerate(logs)]
  _wait(processes, logs, timeout=600)
  summary = json.loads(out.read_text())
  assert summary['devices'] == summary['processes'] == 2
  assert summary['indivisible_error'] == ('config.optim.batch_size=9 does not divide by the 2 '
                                          'devices; use a multiple of 2.')
  _assert_same_step(dict(np.load(out.with_suffix('.npz'))),
                    dict(np.load(reference.with_suffix('.npz'))))


@pytest.mark.slow
def test_smoke_run_on_4_devices_matches_1_device(smoke_data_dir, tmp_path):
  """30 steps on 4 devices against 1. LATER_RTOL bounds the chaotic drift as measured with the
  pure-XLA convolutions, so this run uses them: oneDNN picks other kernels for a quarter of the
  batch, and its drift reached 11% at step 30 here (its first steps agree within
  FIRST_STEPS_RTOL; the one-step tests above run on it)."""
  subprocess.run([sys.executable, str(ROOT / 'tests' / 'sharded_checks.py'), 'run',
                  smoke_data_dir, str(tmp_path)], env=_environment(4, onednn=False), check=True,
                 timeout=600)
  _assert_same_run(tmp_path / 'all', tmp_path / 'one')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _wait(processes, logs, timeout: float):
  """Every process ends with 0 (else its log is shown); none outlives the test."""
  try:
    for process, log in zip(processes, logs):
      assert process.wait(timeout=timeout) == 0, log.read_text()
  finally:
    for process in processes:
      if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _launch_processes(smoke_data_dir, workdir, num_processes: int):
  port = _free_port()
  command = [sys.executable, str(ROOT / 'launch.py'),
             '--config=' + str(ROOT / 'configs' / 'phase1_synthetic.py') + ':smoke',
             f'--config.data.data_dir={smoke_data_dir}', "--config.evals.test.modes=('clean',)",
             '--config.data.real_softening=0.0',  # as sharded_checks.smoke_config
             '--config.data.photometric_jitter=0.0',
             '--config.log_every_steps=1', f'--workdir={workdir}',
             f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={num_processes}']
  logs = [open(pathlib.Path(workdir).parent / f'process_{i}.log', 'a')
          for i in range(num_processes)]
  return [subprocess.Popen(command + [f'--process_id={i}'], env=_environment(1), stdout=log,
                           stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
          for i, log in enumerate(logs)]


def test_two_processes_killed_and_resumed_match_one_process(smoke_data_dir, reference_run,
                                                            tmp_path):
  """Two local processes (one CPU device each, the global batch split between them) are killed
  once their first checkpoint exists, started again, and end as one process does."""
  workdir = tmp_path / 'run'
  processes = _launch_processes(smoke_data_dir, workdir, 2)
  deadline = time.time() + 300
  def saved():  # a finished Orbax save: the folder renamed to the bare step number
    folder = workdir / 'checkpoints'
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())

  while not saved() and time.time() < deadline:
    assert all(p.poll() is None for p in processes), (tmp_path / 'process_0.log').read_text()
    time.sleep(0.2)
  for p in processes:
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
  assert not (workdir / 'results').exists()  # stopped before the end
  processes = _launch_processes(smoke_data_dir, workdir, 2)
  for p in processes:
    assert p.wait(timeout=300) == 0, (tmp_path / 'process_0.log').read_text()
  log0 = (tmp_path / 'process_0.log').read_text()
  assert 'resumed' in log0 and '2 process(es)' in log0
  assert (tmp_path / 'process_1.log').read_text().count('[gta_jax') == 0  # only process 0 logs
  _assert_same_run(workdir, reference_run)


@pytest.mark.slow
def test_a_process_late_to_the_first_collective_is_waited_for(tmp_path):
  """gloo gives a process 30 s to join the first collective, which sets up the connections;
  initialize() joins the processes once while they are together, so that a process that reaches
  the run's first barrier much later (process 0 computing DCT statistics alone) is waited for."""
  address = f'127.0.0.1:{_free_port()}'
  logs = [tmp_path / f'process_{i}.log' for i in range(2)]
  processes = [subprocess.Popen([sys.executable, str(ROOT / 'tests' / 'sharded_checks.py'),
                                 'late_collective', address, '2', str(i), '40'],
                                env=_environment(1), stdout=open(log, 'w'),
                                stderr=subprocess.STDOUT, start_new_session=True)
               for i, log in enumerate(logs)]
  _wait(processes, logs, timeout=300)
  assert all('joined' in log.read_text() for log in logs)


def test_process_rows_read_the_global_order_of_one_process(smoke_data_dir):
  builder = pipeline.load_builder(pipeline.BUILTIN, 'smoke', smoke_data_dir)
  for split, kwargs in (('train', dict(mode='multi', shuffle=True, drop_remainder=True,
                                       widening=augment.Widening(real_softening=0.5))),
                        ('validation', dict(shuffle=False, drop_remainder=False))):
    source = pipeline.data_source(builder, split)
    whole = list(pipeline.batches(source, 32, seed=5, epoch=1, **kwargs))
    halves = [list(pipeline.batches(source, 32, seed=5, epoch=1, rows=rows, **kwargs))
              for rows in ((0, 16), (16, 32))]
    assert len(whole) == len(halves[0]) == len(halves[1])
    for full, first, second in zip(whole, *halves):
      for key in full:
        np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), full[key])
    assert sum(int(b['mask'].sum()) for b in whole) == (
        len(source) if split == 'validation' else len(source) // 32 * 32)


def test_launch_flags_go_together():
  with pytest.raises(errors.ConfigError, match='go together'):
    distributed.initialize('127.0.0.1:1234', None, 0)
  with pytest.raises(errors.ConfigError, match='process_id=2'):
    distributed.initialize('127.0.0.1:1234', 2, 2)
