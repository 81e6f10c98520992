"""One process per run folder: a second training, evaluation or open-set fit is refused naming the
holder's pid; the kernel frees the lock when the holder is killed."""
import fcntl
import os
import signal
import subprocess
import sys
import time
import types

import pytest

from conftest import ROOT
from gta_jax import chains
from gta_jax import evaluation
from gta_jax import train
from gta_jax.io import workdir_lock
from gta_jax.scoring import openset_fit


def _phase1(smoke_data_dir, **overrides):
  config = chains.load_config_file(str(ROOT / 'configs' / 'phase1_synthetic.py'), 'smoke')
  with config.unlocked():
    config.data.data_dir = smoke_data_dir
    for key, value in overrides.items():
      setattr(config.optim, key, value)
  return config


def _hold(folder, text='pid 4242 (training phase1_synthetic: launch.py)\n'):
  """The lock as another process holds it (a second open file description: flock conflicts)."""
  folder.mkdir(parents=True, exist_ok=True)
  handle = open(folder / workdir_lock.LOCK_FILE, 'w')
  fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  handle.write(text)
  handle.flush()
  return handle


def test_a_second_training_or_evaluation_is_refused_naming_the_holder(smoke_data_dir, tmp_path):
  holder = _hold(tmp_path / 'run')
  try:
    with pytest.raises(workdir_lock.WorkdirBusy, match=r'run is in use by pid 4242 \(training'):
      train.train_and_evaluate(_phase1(smoke_data_dir), tmp_path / 'run')
    with pytest.raises(workdir_lock.WorkdirBusy, match='pid 4242'):
      with workdir_lock.locked(tmp_path / 'run', 'evaluation'):
        pass
  finally:
    holder.close()  # closing frees it, as the kernel does for a killed process
  with workdir_lock.locked(tmp_path / 'run', 'evaluation'):
    held = (tmp_path / 'run' / workdir_lock.LOCK_FILE).read_text()
    assert f'pid {os.getpid()} (evaluation' in held
    with workdir_lock.locked(tmp_path / 'run', 'nested'):  # the holder itself goes on
      pass
  assert (tmp_path / 'run' / workdir_lock.LOCK_FILE).read_text() == ''  # released, no stale pid


def test_tools_that_write_into_a_finished_run_take_its_lock(tmp_path):
  holder = _hold(tmp_path / 'run')
  try:
    with pytest.raises(workdir_lock.WorkdirBusy, match='pid 4242'):
      evaluation.evaluate_run(tmp_path / 'run')
    with pytest.raises(workdir_lock.WorkdirBusy, match='pid 4242'):
      evaluation.crosstest_run(tmp_path / 'run')
    run = types.SimpleNamespace(workdir=tmp_path / 'run')  # what fit reads before its lock
    with pytest.raises(workdir_lock.WorkdirBusy, match='pid 4242'):
      openset_fit.fit(run)
  finally:
    holder.close()


@pytest.mark.slow
def test_two_launches_on_one_workdir_the_second_refused_and_a_kill_frees_it(smoke_data_dir,
                                                                            tmp_path):
  """Was: same config -> a raw Orbax traceback in one; other configs -> both exit 0 beside one
  metrics.jsonl interleaving both runs."""
  workdir = tmp_path / 'run'
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  command = [sys.executable, str(ROOT / 'launch.py'),
             f'--config={ROOT / "configs" / "phase1_synthetic.py"}:smoke',
             f'--config.data.data_dir={smoke_data_dir}', f'--workdir={workdir}']
  longer = ['--config.optim.max_epochs=200', '--config.optim.patience=200']
  first = subprocess.Popen(command + longer, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True)
  try:
    lock_file = workdir / workdir_lock.LOCK_FILE
    deadline = time.time() + 120
    while not (lock_file.is_file() and lock_file.read_text().startswith('pid')):
      assert first.poll() is None and time.time() < deadline, first.stderr.read().decode()
      time.sleep(0.2)
    for extra in ([], ['--config.optim.learning_rate=0.5']):  # same config, another config
      second = subprocess.run(command + extra, env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
      assert second.returncode == 2, second.stderr
      assert f'is in use by pid {first.pid} (training phase1_synthetic' in second.stderr
      assert 'Traceback' not in second.stderr
    assert first.poll() is None  # the holder trains on, untouched
  finally:
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
  with workdir_lock.locked(workdir, 'after the kill'):  # the kernel released it
    pass


def test_a_mistyped_run_folder_is_not_created_by_the_lock(tmp_path):
  with pytest.raises(FileNotFoundError, match='holds no finished run'):
    evaluation.evaluate_run(tmp_path / 'typo')
  assert not (tmp_path / 'typo').exists()


@pytest.mark.slow
def test_a_multi_process_run_on_a_held_workdir_stops_on_every_process(smoke_data_dir, tmp_path):
  """The review's case: only process 0 takes the lock; the others learn its outcome (one
  broadcast) and stop with it, instead of waiting for process 0 at their first collective."""
  import socket
  workdir = tmp_path / 'run'
  holder = _hold(workdir)
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS='cpu')
  command = [sys.executable, str(ROOT / 'launch.py'),
             f'--config={ROOT / "configs" / "phase1_synthetic.py"}:smoke',
             f'--config.data.data_dir={smoke_data_dir}', f'--workdir={workdir}',
             f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2']
  try:
    processes = [subprocess.Popen(command + [f'--process_id={i}'], env=env, cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
    outputs = [p.communicate(timeout=180) for p in processes]
  finally:
    holder.close()
  assert [p.returncode for p in processes] == [2, 2], outputs
  assert 'in use by pid 4242' in outputs[0][1]
  assert 'process 0 of this run could not lock it' in outputs[1][1]
