"""Training: resume equality, the frozen shared primary, independent heads, and error paths."""
import functools
import json
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
from ml_collections.config_flags import config_path
import numpy as np
import optax
import pytest

from conftest import ROOT
from gta_jax import chains
from gta_jax import errors
from gta_jax import evaluation
from gta_jax import optim
from gta_jax import run_config
from gta_jax import train
from gta_jax.data import augment
from gta_jax.data import builders
from gta_jax.families import base
from gta_jax.families import losses
from gta_jax.families import proposed
from gta_jax.io import checkpoints
from gta_jax.models import networks
from gta_jax.scoring import openset as openset_scores
from gta_jax.scoring import openset_fit
from gta_jax.tools import openset as openset_tool


def _config(name, smoke_data_dir, **overrides):
  config = chains.load_config_file(str(ROOT / 'configs' / f'{name}.py'), 'smoke')
  with config.unlocked():
    config.data.data_dir = smoke_data_dir
    for key, value in overrides.items():
      config_path.set_value(key, config, value)
  return config


def _bundle(workdir):
  return checkpoints.load_model_bundle(pathlib.Path(workdir) / 'model')


@pytest.fixture(scope='module')
def quickstart(smoke_data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('quickstart')
  config = _config('quickstart', smoke_data_dir)
  results = train.train_and_evaluate(config, workdir)
  return workdir, results


@pytest.mark.smoke
def test_a_smoke_run_trains_exports_evaluates_and_a_second_call_does_nothing(smoke_data_dir,
                                                                            tmp_path):
  """The fast tier's end-to-end run: phase I on the smoke data checkpoints, exports a bundle,
  writes its records and metrics; the same command again finds it finished and returns them."""
  config = _config('phase1_synthetic', smoke_data_dir)
  results = train.train_and_evaluate(config, tmp_path / 'run')
  run = tmp_path / 'run'
  assert results['clean']['detection']['count'] == 120  # every test image scored
  assert json.loads((run / 'results' / 'metrics.json').read_text()) == results
  spec, variables, _ = _bundle(run)
  assert spec.trained_steps > 0 and networks.count_parameters(variables) == 27_261
  assert checkpoints.training_manager(run / 'checkpoints').latest_step() == spec.trained_steps
  for record in ('config.json', 'provenance.json', 'metrics.jsonl'):
    assert (run / record).read_text().strip()
  # Calibration fitted on validation at export, stored in the bundle with what it read, and
  # reported beside the scores' own figures; the operating points are validation's.
  fitted = spec.calibration['detection']
  assert fitted['fit']['split'] == 'validation' and fitted['fit']['mode'] == config.data.train_mode
  assert len(fitted['fit']['digest']) == 64 and fitted['fit']['images'] > 0
  clean = results['clean']['detection']
  assert clean['calibrated']['temperature'] == fitted['temperature'] > 0
  assert clean['tpr_at_fpr_1pct']['threshold'] == fitted['fpr_thresholds']['0.01']
  assert 0 <= clean['tpr_at_fpr_5pct']['fpr'] <= 1 and clean['ece'] >= 0
  assert train.train_and_evaluate(config, run) == results
  # A bundle exported before calibration was fitted: evaluate fits the same one for its figures
  # and leaves the bundle as it is.
  checkpoints.update_model_spec(run / 'model', calibration={})
  bundle = (run / 'model' / 'model.json').read_text()
  again = evaluation.evaluate_run(run)
  assert again['clean']['detection']['calibrated'] == clean['calibrated']
  assert (run / 'model' / 'model.json').read_text() == bundle
  checkpoints.update_model_spec(run / 'model', calibration=spec.calibration)
  # A finished run checks the config it is given as a resumed one does: another phase's config,
  # or another setting, is refused rather than answered with this run's results.
  with pytest.raises(errors.ConfigError, match=r'finished run trained with other settings.*'
                     r'config.phase: 1 when it started, now 3'):
    train.train_and_evaluate(_config('phase3_synthetic', smoke_data_dir,
                                     **{'init.primary': str(run)}), run)
  other = _config('phase1_synthetic', smoke_data_dir, **{'optim.learning_rate': 0.5})
  with pytest.raises(errors.ConfigError, match='optim.learning_rate'):
    train.train_and_evaluate(other, run)
  # An empty results file (a write cut short) no longer blocks the run: it evaluates again from
  # its last checkpoint, with no step trained, to the same results.
  (run / 'results' / 'metrics.json').write_text('')
  assert train.train_and_evaluate(config, run) == results
  assert json.loads((run / 'results' / 'metrics.json').read_text()) == results


def test_quickstart_runs_all_four_phases_and_evaluates(quickstart):
  workdir, results = quickstart
  assert set(results) == {'phase1_synthetic', 'phase2_synthetic', 'phase3_synthetic',
                          'phase4_synthetic'}
  for phase in results:
    metrics = json.loads((workdir / phase / 'results' / 'metrics.json').read_text())
    assert set(metrics) >= {'clean', 'jpeg'}
    assert metrics['clean']['detection']['count'] == 120  # every test image scored
    assert (workdir / phase / 'config.json').is_file()
    assert (workdir / phase / 'metrics.jsonl').read_text().strip()
    assert list((workdir / phase / 'tensorboard').iterdir())
  heads = json.loads((workdir / 'phase3_synthetic' / 'results' / 'metrics.json').read_text())
  assert set(heads['clean']['heads']) == {'tconv', 'nearest', 'bilinear', 'pixelshuffle'}
  assert 'multiclass' in heads['clean'] and 'cross_seed' in heads
  assert 0 <= heads['clean']['detection']['external_accuracy'] <= 1


def test_phase2_starts_from_phase1_and_heads_never_touch_their_primary(quickstart):
  workdir, _ = quickstart
  _, phase2, _ = _bundle(workdir / 'phase2_synthetic')
  for phase in ('phase3_synthetic', 'phase4_synthetic'):
    spec, variables, _ = _bundle(workdir / phase)
    recorded = json.loads((workdir / phase / 'primary.json').read_text())
    assert recorded['digest'] == checkpoints.tree_digest(phase2['primary']) == spec.primary_digest
    assert recorded['trained_steps'] > 0 and len(recorded['best_epoch']) == 1
    jax.tree.map(np.testing.assert_array_equal, variables['primary'], phase2['primary'])
  # Phase IV continued from phase III's heads, so they moved but kept their structure.
  _, p3, _ = _bundle(workdir / 'phase3_synthetic')
  _, p4, _ = _bundle(workdir / 'phase4_synthetic')
  assert jax.tree.structure(p3['heads']) == jax.tree.structure(p4['heads'])


def test_phase4_heads_train_on_the_device_path_from_the_same_phase3(quickstart, smoke_data_dir,
                                                                   tmp_path):
  """The heads family on the device data path (augmented phase IV): it trains, records the path
  it ran on, and starts from the same phase-III heads on the same frozen primary."""
  workdir, _ = quickstart
  config = _config('phase4_synthetic', smoke_data_dir, **{
      'data.augment_on': 'device', 'optim.max_epochs': 1,
      'init.from_run': str(workdir / 'phase3_synthetic'),
      'init.primary': str(workdir / 'phase2_synthetic')})
  results = train.train_and_evaluate(config, tmp_path / 'phase4_device')
  assert results and json.loads((tmp_path / 'phase4_device' / 'config.json').read_text())[
      'data']['augment_on'] == 'device'
  _, host, _ = _bundle(workdir / 'phase4_synthetic')
  _, device, _ = _bundle(tmp_path / 'phase4_device')
  jax.tree.map(np.testing.assert_array_equal, device['primary'], host['primary'])
  assert jax.tree.structure(device['heads']) == jax.tree.structure(host['heads'])


def test_rerunning_a_finished_run_is_a_no_op(quickstart, smoke_data_dir):
  workdir, results = quickstart
  before = (workdir / 'phase1_synthetic' / 'model' / 'model.json').stat().st_mtime_ns
  again = train.train_and_evaluate(_config('quickstart', smoke_data_dir), workdir)
  assert again == results
  assert (workdir / 'phase1_synthetic' / 'model' / 'model.json').stat().st_mtime_ns == before


def test_a_new_head_run_changes_no_existing_head_or_primary(quickstart, smoke_data_dir, tmp_path):
  workdir, _ = quickstart
  existing = {p: checkpoints.tree_digest(_bundle(workdir / p)[1])
              for p in ('phase2_synthetic', 'phase3_synthetic')}
  config = _config('phase3_synthetic', smoke_data_dir, sources=('bilinear',),
                   **{'init.primary': str(workdir / 'phase2_synthetic'), 'optim.max_epochs': 1})
  train.train_and_evaluate(config, tmp_path / 'new_head')
  for phase, digest in existing.items():
    assert checkpoints.tree_digest(_bundle(workdir / phase)[1]) == digest


def test_head_run_records_its_primary_with_its_first_checkpoint_and_refuses_another(
    quickstart, smoke_data_dir, tmp_path, monkeypatch):
  """A failed first step leaves nothing that blocks the corrected command; once a checkpoint
  exists, another primary (path or weights) is refused instead of mixed into the run."""
  workdir, _ = quickstart
  phase = lambda primary: _config('phase3_synthetic', smoke_data_dir, sources=('tconv',),
                                  **{'init.primary': str(workdir / primary),
                                     'optim.max_epochs': 1})
  run_dir = tmp_path / 'heads'
  _interrupt_at(monkeypatch, 0, RuntimeError('bad first step'), proposed.Heads)
  with pytest.raises(RuntimeError):
    train.train_and_evaluate(phase('phase1_synthetic'), run_dir)
  assert not (run_dir / 'primary.json').exists() and not (run_dir / 'config.json').exists()
  monkeypatch.undo()
  _interrupt_at(monkeypatch, 3, KeyboardInterrupt(), proposed.Heads)
  with pytest.raises(KeyboardInterrupt):  # the corrected command, stopped after 3 steps
    train.train_and_evaluate(phase('phase2_synthetic'), run_dir)
  monkeypatch.undo()
  recorded = json.loads((run_dir / 'primary.json').read_text())
  assert recorded['path'].endswith('phase2_synthetic')
  with pytest.raises(ValueError, match='init.primary'):
    train.train_and_evaluate(phase('phase1_synthetic'), run_dir)
  (run_dir / 'primary.json').write_text(json.dumps({**recorded, 'digest': 'f' * 64}))
  with pytest.raises(ValueError, match='different weights'):  # same path, other weights
    train.train_and_evaluate(phase('phase2_synthetic'), run_dir)


@pytest.mark.parametrize('name, overrides', [
    ('phase1_synthetic', {'model.input': 'dct'}),
    ('baseline_gandct', {'data.name': 'synthetic_fingerprints', 'data.config': 'smoke'}),
])
@pytest.mark.slow
def test_fixed_size_models_run_on_the_builtin_data_and_skip_the_64px_external_split(
    smoke_data_dir, tmp_path, name, overrides):
  """DCT models and gandct-conv take their training size only; the built-in external faces are
  64 px: external accuracy is reported as not measured instead of crashing the evaluation."""
  config = _config(name, smoke_data_dir, **overrides, **{'optim.max_epochs': 1})
  results = train.train_and_evaluate(config, tmp_path / 'run')
  assert results['clean']['detection']['count'] == 120
  assert results['clean']['detection']['external_accuracy'] is None


def test_phase3_before_its_primary_names_the_config_to_run(smoke_data_dir, tmp_path):
  config = _config('phase3_synthetic', smoke_data_dir,
                   **{'init.primary': str(tmp_path / 'no_phase2_yet')})
  with pytest.raises(FileNotFoundError, match='phase2_synthetic'):
    train.train_and_evaluate(config, tmp_path / 'run')


def _interrupt_at(monkeypatch, step_to_fail, exception, family=proposed.Detector):
  """Makes the family's training step raise `exception` once the run reaches `step_to_fail`."""
  original = family.make_train_step

  def make_train_step(self, optimizer):
    step = original(self, optimizer)

    def failing(state, *args):
      if int(state.step) == step_to_fail:
        raise exception
      return step(state, *args)
    return failing

  monkeypatch.setattr(family, 'make_train_step', make_train_step)


@pytest.fixture(scope='module', params=['host', pytest.param('device', marks=pytest.mark.slow)])
def straight_phase1(smoke_data_dir, tmp_path_factory, request):
  """An uninterrupted phase-I smoke run on multi-augmented data: 15 steps per epoch, a
  checkpoint every 5, so every epoch ends on a periodic checkpoint. Augmented on the host and
  (full suite) on the device: the kill-and-resume tests run on both data paths."""
  config = _config('phase1_synthetic', smoke_data_dir,
                   **{'data.train_mode': 'multi', 'data.augment_on': request.param})
  workdir = tmp_path_factory.mktemp('straight')
  return config, workdir, train.train_and_evaluate(config, workdir)


def _assert_same_run(straight_dir, resumed_dir, straight_results, resumed_results):
  spec_a, vars_a, _ = _bundle(straight_dir)
  spec_b, vars_b, _ = _bundle(resumed_dir)
  jax.tree.map(np.testing.assert_array_equal, vars_a, vars_b)
  assert spec_a.best_epochs == spec_b.best_epochs and spec_a.trained_steps == spec_b.trained_steps
  assert resumed_results == straight_results
  lines = lambda d: [json.loads(line) for line in (d / 'metrics.jsonl').read_text().splitlines()]
  assert lines(resumed_dir) == lines(straight_dir)  # nothing logged twice


@pytest.mark.parametrize('exception, resumes_from', [
    (KeyboardInterrupt(), 22),      # Ctrl-C: saves the current step
    (RuntimeError('killed'), 20),   # like kill -9: only the last periodic checkpoint survives
])
def test_interrupted_run_resumes_to_the_same_weights(straight_phase1, tmp_path, monkeypatch,
                                                     exception, resumes_from):
  config, straight_dir, reference = straight_phase1
  _interrupt_at(monkeypatch, 22, exception)  # mid-epoch 2 (15 steps per epoch)
  with pytest.raises(type(exception)):
    train.train_and_evaluate(config, tmp_path / 'interrupted')
  monkeypatch.undo()
  steps = sorted(int(p.name) for p in (tmp_path / 'interrupted' / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps[-1] == resumes_from
  resumed = train.train_and_evaluate(config, tmp_path / 'interrupted')
  _assert_same_run(straight_dir, tmp_path / 'interrupted', reference, resumed)


def test_the_weight_average_is_a_moving_average_that_validation_and_export_read():
  """optim.track_average against the recurrence, computed by hand: Adam's updates are
  unchanged, and the average is what evaluated_state hands to validation; without it, the
  trained state itself."""
  from gta_jax import optim
  params = {'w': jnp.array([1.0, -2.0, 0.5])}
  plain, averaged = optax.adam(0.1), optax.chain(optax.adam(0.1), optim.track_average(0.8))
  plain_state, averaged_state = plain.init(params), averaged.init(params)
  weights, expected = params, np.asarray(params['w'], np.float64)
  for i in range(4):
    grads = {'w': jnp.array([1.0, -1.0, 0.5 * i])}
    updates, plain_state = plain.update(grads, plain_state, weights)
    same, averaged_state = averaged.update(grads, averaged_state, weights)
    np.testing.assert_array_equal(updates['w'], same['w'])
    weights = optax.apply_updates(weights, updates)
    expected = 0.8 * expected + 0.2 * np.asarray(weights['w'])
  np.testing.assert_allclose(optim.averaged_params(averaged_state)['w'], expected, rtol=1e-6)
  assert optim.averaged_params(plain_state) is None
  state = base.TrainState(jnp.zeros((), jnp.int32), weights, {}, averaged_state)
  np.testing.assert_allclose(optim.evaluated_state(state).params['w'], expected, rtol=1e-6)
  unaveraged = base.TrainState(jnp.zeros((), jnp.int32), weights, {}, plain_state)
  assert optim.evaluated_state(unaveraged) is unaveraged


def test_the_cosine_schedule_runs_from_the_rate_to_zero_over_the_budget():
  """config.optim.schedule: Adam's first step moves each weight by the full rate, a step at the
  end of the budget by nothing; 'constant' is the release's plain rate; a typo names the key."""
  config = chains.load_config_file(str(ROOT / 'configs' / 'common.py'))
  with config.unlocked():
    config.optim.learning_rate, config.optim.schedule = 0.1, 'cosine'
  schedule = optim.learning_rate_schedule(config, total_steps=100)
  np.testing.assert_allclose([schedule(0), schedule(50), schedule(100)], [0.1, 0.05, 0.0],
                             atol=1e-7)
  params = {'w': jnp.array([1.0, -2.0])}
  optimizer = optim.make_optimizer(config, total_steps=4)
  opt_state, moves = optimizer.init(params), []
  for _ in range(5):
    updates, opt_state = optimizer.update({'w': jnp.array([3.0, -0.5])}, opt_state, params)
    moves.append(np.abs(np.asarray(updates['w'])))
  np.testing.assert_allclose(moves[0], [0.1, 0.1], rtol=1e-5)  # Adam's first step: rate * sign
  np.testing.assert_allclose(moves[4], [0.0, 0.0], atol=1e-9)
  assert all((moves[i] > moves[i + 1]).all() for i in range(4))
  with config.unlocked():
    config.optim.schedule = 'constant'
  assert optim.learning_rate_schedule(config, total_steps=100) == 0.1
  with config.unlocked():
    config.optim.schedule = 'cosin'
  with pytest.raises(errors.ConfigError, match=r"config\.optim\.schedule='cosin'"):
    run_config.check(config)


def test_a_run_with_a_weight_average_exports_it_and_resumes_to_the_same_model(
    straight_phase1, smoke_data_dir, tmp_path, monkeypatch):
  """config.optim.weight_average_decay: the average rides in the optimizer state, so a run
  interrupted mid-epoch resumes to the same model; the model it exports is not the plain run's.
  The cosine schedule's step count rides there too (the resumed rate is the straight run's)."""
  config, straight_dir, _ = straight_phase1
  averaged = _config('phase1_synthetic', smoke_data_dir,
                     **{'data.train_mode': 'multi', 'optim.weight_average_decay': 0.8,
                        'optim.schedule': 'cosine'})
  reference = train.train_and_evaluate(averaged, tmp_path / 'straight')
  _interrupt_at(monkeypatch, 22, KeyboardInterrupt())
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(averaged, tmp_path / 'interrupted')
  monkeypatch.undo()
  resumed = train.train_and_evaluate(averaged, tmp_path / 'interrupted')
  _assert_same_run(tmp_path / 'straight', tmp_path / 'interrupted', reference, resumed)
  plain_weights = jax.tree.leaves(_bundle(straight_dir)[1])
  averaged_weights = jax.tree.leaves(_bundle(tmp_path / 'straight')[1])
  assert len(plain_weights) == len(averaged_weights)
  assert any(not np.array_equal(a, b) for a, b in zip(plain_weights, averaged_weights))


@pytest.mark.parametrize('where, call, exception', [
    ('train.validation_loss', 1, KeyboardInterrupt()),  # Ctrl-C while validating epoch 1
    ('train.validation_loss', 2, RuntimeError('kill')),  # killed while validating the last epoch
    ('evaluation.evaluate', 1, RuntimeError('kill')),    # killed during the final test evaluation
])
def test_a_run_stopped_at_an_epoch_boundary_resumes_to_the_same_model(
    straight_phase1, tmp_path, monkeypatch, where, call, exception):
  """The epoch's last step is also a periodic checkpoint: the resumed run must still validate that
  epoch (best weights, patience) and export what the uninterrupted run exported."""
  config, straight_dir, reference = straight_phase1
  module, where = {'train': train, 'evaluation': evaluation}[where.split('.')[0]], where.split('.')[1]
  original, calls = getattr(module, where), []

  def failing(*args, **kwargs):
    calls.append(1)
    if len(calls) == call:
      raise exception
    return original(*args, **kwargs)

  monkeypatch.setattr(module, where, failing)
  with pytest.raises(type(exception)):
    train.train_and_evaluate(config, tmp_path / 'stopped')
  monkeypatch.undo()
  resumed = train.train_and_evaluate(config, tmp_path / 'stopped')
  _assert_same_run(straight_dir, tmp_path / 'stopped', reference, resumed)


def test_a_resume_refuses_changed_settings_and_falls_back_past_a_damaged_checkpoint(
    straight_phase1, tmp_path, monkeypatch, capsys):
  """Resuming with other training settings is refused (the record kept); with a changed logging
  interval it resumes, and a damaged latest checkpoint is moved aside for the previous one: the
  run still ends as the uninterrupted one."""
  config, straight_dir, reference = straight_phase1
  _interrupt_at(monkeypatch, 22, RuntimeError('killed'))
  with pytest.raises(RuntimeError):
    train.train_and_evaluate(config, tmp_path / 'run')
  monkeypatch.undo()
  stored = (tmp_path / 'run' / 'config.json').read_text()
  changed = config.copy_and_resolve_references()
  changed.optim.learning_rate = config.optim.learning_rate * 2
  changed.data.train_mode = 'clean'
  with pytest.raises(ValueError, match=r'optim.learning_rate: .* when it started, now') as info:
    train.train_and_evaluate(changed, tmp_path / 'run')
  assert 'data.train_mode' in str(info.value)
  switched = config.copy_and_resolve_references()  # the other data path draws other images
  switched.data.augment_on = {'host': 'device', 'device': 'host'}[config.data.augment_on]
  with pytest.raises(ValueError, match=r'config.data.augment_on: .* when it started, now'):
    train.train_and_evaluate(switched, tmp_path / 'run')
  assert (tmp_path / 'run' / 'config.json').read_text() == stored  # the record is kept
  checkpoint_dir = tmp_path / 'run' / 'checkpoints'
  assert sorted(p.name for p in checkpoint_dir.iterdir()) == ['15', '20']
  for file in (checkpoint_dir / '20').rglob('*'):
    if file.is_file():
      file.write_bytes(b'\0' * 7)  # e.g. a disk that filled while it was written
  allowed = config.copy_and_resolve_references()
  allowed.log_every_steps = 3  # how often it logs is not what it trains
  capsys.readouterr()
  resumed = train.train_and_evaluate(allowed, tmp_path / 'run')
  printed = capsys.readouterr().out
  assert 'cannot be read' in printed and 'unreadable-20' in printed and 'resumed' in printed
  assert (checkpoint_dir / 'unreadable-20').is_dir()  # kept, not deleted
  jax.tree.map(np.testing.assert_array_equal, _bundle(straight_dir)[1], _bundle(tmp_path / 'run')[1])
  assert resumed == reference


def test_joint_heads_step_equals_separate_single_head_steps():
  """K heads trained together are K independent heads: same update as training each alone.

  SGD, not Adam: a conv bias followed by BatchNorm has a true gradient of ~0, and Adam's
  g / (|g| + eps) would blow summation-order noise up to +-lr. Adam is elementwise, so
  independence of the gradients is what matters.
  """
  import optax
  optimizer = optax.sgd(0.1)
  key = jax.random.key(0)
  primary_model = networks.Primary(True)
  constants = {'dct_mean': np.zeros((), np.float32), 'dct_std': np.ones((), np.float32),
               'primary': networks.init_variables(primary_model, key, (1, 32, 32, 3))}
  heads = networks.init_variables(networks.StackedHeads(2, True), key, (1, 8, 8, 16))
  batch = {'image': np.asarray(jax.random.randint(key, (8, 32, 32, 3), 0, 256), np.uint8),
           'label': np.ones(8, np.int32), 'mask': np.ones(8, bool)}
  targets = jnp.asarray(np.array([[1, 0, 1, 0, 1, 0, 1, 0], [0, 0, 1, 1, 0, 0, 1, 1]], np.float32))

  def step(state, targets, active):  # the real step, with K heads as many as the state holds
    heads_model = networks.StackedHeads(targets.shape[0], True)
    return jax.jit(lambda s, t, a: proposed.heads_train_step(
        s, constants, batch, t, a, primary_model=primary_model, heads_model=heads_model,
        input_kind='pixel', loss_fn=losses.sigmoid_bce, optimizer=optimizer))(
            state, targets, active)

  joint, _ = step(base.new_state(heads, optimizer), targets, jnp.array([True, True]))
  for k in range(2):
    single = jax.tree.map(lambda a: a[k:k + 1], heads)
    alone, _ = step(base.new_state(single, optimizer), targets[k:k + 1], jnp.array([True]))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[k], b[0], rtol=1e-5, atol=1e-7),
                 joint.params, alone.params)
  # A stopped head does not move at all.
  frozen, _ = step(base.new_state(heads, optimizer), targets, jnp.array([True, False]))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[1], b[1]), frozen.params,
               heads['params'])


@pytest.mark.slow
def test_non_finite_loss_stops_with_a_clear_error(smoke_data_dir, tmp_path, monkeypatch):
  config = _config('phase1_synthetic', smoke_data_dir, log_every_steps=1)
  # (NaN images would not do: XLA's ReLU maps NaN to 0.) Both losses a detector may use.
  for name in ('sigmoid_bce', 'sigmoid_bce_class_weighted'):
    original = getattr(losses, name)
    monkeypatch.setattr(losses, name, lambda *a, _f=original, **k: _f(*a, **k) * jnp.inf)
  with pytest.raises(FloatingPointError, match='learning_rate'):
    train.train_and_evaluate(config, tmp_path / 'nan')


def _nan_loss_at(monkeypatch, bad_step):
  """The training step's reported loss is NaN at `bad_step` only (as a run that diverges between
  two logged steps), the weights untouched."""
  original = proposed.Detector.make_train_step

  def make_train_step(self, optimizer):
    step = original(self, optimizer)

    def diverging(state, *args):
      number = int(state.step)
      state, metrics = step(state, *args)
      if number == bad_step:
        metrics = dict(metrics, loss=metrics['loss'] * jnp.nan)
      return state, metrics
    return diverging

  monkeypatch.setattr(proposed.Detector, 'make_train_step', make_train_step)


@pytest.mark.slow
def test_a_loss_that_turns_nan_between_logged_steps_stops_before_the_next_save(
    smoke_data_dir, tmp_path, monkeypatch):
  """Logged every 100 steps, saved every 5: a NaN at step 7 stops the run at its next save
  (step 10), which is not written; no model is exported."""
  config = _config('phase1_synthetic', smoke_data_dir, log_every_steps=100,
                   checkpoint_every_steps=5)
  _nan_loss_at(monkeypatch, 7)
  with pytest.raises(errors.TrainingDiverged, match='between steps 5 and 10') as info:
    train.train_and_evaluate(config, tmp_path / 'run')
  assert 'the last checkpoint holds the last finite state' in str(info.value)
  assert sorted(p.name for p in (tmp_path / 'run' / 'checkpoints').iterdir()) == ['5']
  assert not (tmp_path / 'run' / 'model').exists()
  assert not (tmp_path / 'run' / 'results').exists()


@pytest.mark.slow
def test_a_non_finite_validation_loss_stops_before_the_epoch_is_saved_or_exported(
    smoke_data_dir, tmp_path, monkeypatch):
  """Was: NaN never improves on the initial infinity, so the run exported its initial weights
  (best epochs [0]) and exited 0."""
  config = _config('phase1_synthetic', smoke_data_dir, checkpoint_every_steps=1000)
  monkeypatch.setattr(train, 'validation_loss', lambda *a, **k: np.array([np.nan]))
  with pytest.raises(errors.TrainingDiverged, match='validation loss nan after epoch 1'):
    train.train_and_evaluate(config, tmp_path / 'run')
  assert not (tmp_path / 'run' / 'model').exists()
  assert not (tmp_path / 'run' / 'checkpoints').exists() or not any(
      p.name.isdigit() for p in (tmp_path / 'run' / 'checkpoints').iterdir())


def test_every_config_loads_with_and_without_smoke():
  for path in sorted((ROOT / 'configs').glob('*.py')):
    if path.name in ('__init__.py', 'common.py', 'baselines.py', 'paper_tables.py'):
      continue
    fold = getattr(chains._load_module(str(path)), 'FOLDS', ('',))[0]  # configs that need one
    for arg in (fold, ','.join(filter(None, (fold, 'smoke')))):
      config = chains.load_config_file(str(path), arg)
      assert config.name, path
      if arg.endswith('smoke'):  # the built-in smoke set, or a folder dataset's dummy_data size
        assert config.data.config in ('smoke', 'smoke_multiseed', '2-1-1') and config.optim.batch_size <= 16


@pytest.mark.slow
def test_config_typo_is_a_one_line_error():
  result = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/phase1_synthetic.py:smoke',
       '--config.optim.learning_rat=0.1'], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert 'learning_rat' in result.stderr and 'Traceback' not in result.stderr


def test_evaluate_reproduces_the_run_and_adds_test_sets(quickstart):
  from gta_jax.tools import evaluate
  workdir, results = quickstart
  phase3 = workdir / 'phase3_synthetic'
  again = evaluation.evaluate_run(phase3)
  assert again['clean'] == results['phase3_synthetic']['clean']
  more = evaluation.evaluate_run(phase3, ('clean', 'blur', 'noise'))
  assert set(more) >= {'clean', 'jpeg', 'blur', 'noise', 'cross_seed'}  # jpeg kept from before
  assert json.loads((phase3 / 'results' / 'metrics.json').read_text()) == more
  assert more['blur']['detection']['count'] == 120
  scores = np.load(phase3 / 'results' / 'predictions' / 'noise.npz')
  assert scores['p_heads'].shape == (4, 120) and scores['p_fake'].shape == (120,)
  # The blur set says which images it blurred; those it spared score as in the clean set.
  split = more['blur']['by_perturbation']
  assert set(split) == {'with_blur', 'without_blur'}
  blur = np.load(phase3 / 'results' / 'predictions' / 'blur.npz')
  clean = np.load(phase3 / 'results' / 'predictions' / 'clean.npz')
  spared = blur['perturbations'] == 0
  assert set(np.unique(blur['perturbations'])) == {0, 1 << augment.KIND_BITS['blur']}
  assert split['without_blur']['images'] == spared.sum() and 0 < spared.sum() < 120
  assert split['with_blur']['images'] == 120 - spared.sum()
  np.testing.assert_allclose(blur['p_heads'][:, spared], clean['p_heads'][:, spared], atol=1e-6)
  assert not np.array_equal(blur['p_heads'][:, ~spared], clean['p_heads'][:, ~spared])
  assert not np.any(clean['perturbations'])
  assert evaluate.main(['--workdir', str(workdir / 'nothing_here')]) == 2


def test_report_writes_tables_curves_confusion_and_cam_grids(quickstart, tmp_path):
  from PIL import Image

  from gta_jax.tools import report
  workdir, _ = quickstart
  runs = [str(workdir / p) for p in ('phase1_synthetic', 'phase2_synthetic', 'phase3_synthetic')]
  assert report.main(runs + ['--out', str(tmp_path)]) == 0
  detection = (tmp_path / 'detection.md').read_text()
  assert 'phase1_synthetic' in detection and 'phase2_synthetic' in detection
  assert 'phase3_synthetic' not in detection  # its detection is phase II's primary
  heads_csv = (tmp_path / 'heads.csv').read_text().splitlines()
  assert len(heads_csv) == 1 + 4 and heads_csv[1].startswith('phase3_synthetic,tconv')
  assert (tmp_path / 'multiclass.md').is_file()
  by_perturbation = (tmp_path / 'by_perturbation.csv').read_text().splitlines()
  header = by_perturbation[0].split(',')
  assert header[:2] == ['run', 'output']
  assert {'jpeg with_jpeg f1', 'jpeg without_jpeg f1'} <= set(header)  # every phase's smoke set
  rows = [line.split(',')[:2] for line in by_perturbation[1:]]
  assert rows == ([['phase1_synthetic', 'detection'], ['phase2_synthetic', 'detection']]
                  + [['phase3_synthetic', head] for head in ('tconv', 'nearest', 'bilinear',
                                                             'pixelshuffle')])
  for name in ('curves.png', 'confusion_phase3_synthetic.png'):
    assert Image.open(tmp_path / name).size[0] > 300
  grid = Image.open(tmp_path / 'cams_phase3_synthetic_tconv.png')
  assert grid.size == (4 * 32, 4 * 32)  # 16 smoke images of 32 px, 4 x 4
  assert (tmp_path / 'cams_phase1_synthetic_real.png').is_file()
  # The chain's own workdir stands for its phases, in order.
  assert report.main([str(workdir), '--out', str(tmp_path / 'chain'), '--no-cams']) == 0
  chain = (tmp_path / 'chain' / 'heads.csv').read_text().splitlines()
  assert chain[:5] == heads_csv and len(chain) == 1 + 8  # phase III's rows, then phase IV's


@pytest.mark.slow
def test_launch_reports_a_missing_primary_in_one_line(smoke_data_dir, tmp_path):
  result = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/phase3_synthetic.py:smoke',
       f'--config.data.data_dir={smoke_data_dir}', f'--config.init.primary={tmp_path / "none"}',
       f'--workdir={tmp_path / "run"}'], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert 'Traceback' not in result.stderr
  assert 'error: config.init.primary=' in result.stderr and 'phase2_synthetic' in result.stderr


@pytest.mark.slow
def test_launch_names_a_bad_conv_impl(smoke_data_dir, tmp_path):
  result = subprocess.run(
      [sys.executable, 'launch.py', '--config=configs/phase1_synthetic.py:smoke',
       f'--config.data.data_dir={smoke_data_dir}', '--config.model.conv_impl=fast',
       f'--workdir={tmp_path / "run"}'], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert 'Traceback' not in result.stderr
  assert 'config.model.conv_impl' in result.stderr and 'auto, cpu, lax' in result.stderr


def test_a_phase_refuses_a_previous_run_of_another_input_kind_or_dataset(quickstart, smoke_data_dir,
                                                                        tmp_path):
  from gta_jax import errors
  workdir, _ = quickstart
  phase1 = workdir / 'phase1_synthetic'
  dct = _config('phase2_synthetic', smoke_data_dir,
                **{'init.from_run': str(phase1), 'model.input': 'dct'})
  with pytest.raises(errors.ConfigError, match="takes pixel input but config.model.input='dct'"):
    train.train_and_evaluate(dct, tmp_path / 'dct')
  other = tmp_path / 'ganfp_run'
  shutil.copytree(phase1 / 'model', other / 'model')
  record = json.loads((phase1 / 'config.json').read_text())
  record['data']['name'] = 'ganfp'
  (other / 'config.json').write_text(json.dumps(record))
  config = _config('phase2_synthetic', smoke_data_dir, **{'init.from_run': str(other)})
  with pytest.raises(errors.ConfigError, match='was trained on ganfp'):
    train.train_and_evaluate(config, tmp_path / 'p2')
  heads = _config('phase3_synthetic', smoke_data_dir, **{'init.primary': str(other)})
  with pytest.raises(errors.ConfigError, match='config.init.primary=.*was trained on ganfp'):
    train.train_and_evaluate(heads, tmp_path / 'p3')


def test_hints_name_the_config_that_makes_the_missing_run():
  from gta_jax.io import run_records
  load = lambda name, arg='': chains.load_config_file(str(ROOT / 'configs' / f'{name}.py'), arg)
  assert 'configs/phase1_ganfp_dct.py' in run_records.missing_run_hint(
      '/elsewhere/p1', load('phase2_ganfp_dct'), 1)
  assert 'configs/phase2_faceshq.py:jpeg' in run_records.missing_run_hint(
      'runs/phase2_faceshq_jpeg', load('phase3_faceshq', 'jpeg'), 2)
  assert 'configs/phase3_progan.py' in run_records.missing_run_hint(
      '/x/y', load('phase4_progan'), 3)


def _heads_step_setup(num_heads=2, optimizer=None):
  import optax
  optimizer = optimizer or optax.adam(1e-2)
  key = jax.random.key(1)
  primary_model = networks.Primary(True, bn_momentum=0.5, conv_impl='lax')  # compiles fast
  heads_model = networks.StackedHeads(num_heads, True, bn_momentum=0.5, conv_impl='lax')
  init = lambda model, shape: jax.jit(lambda k: networks.init_variables(model, k, shape))(key)
  primary = init(primary_model, (1, 32, 32, 3))  # (jitted: eager init compiles op by op)
  # Moving statistics far from any batch's, so train- and inference-mode BatchNorm differ.
  primary['batch_stats'] = jax.tree.map(lambda v: v + 3.0, primary['batch_stats'])
  constants = {'dct_mean': np.zeros((), np.float32), 'dct_std': np.ones((), np.float32),
               'primary': primary}
  batch = {'image': np.asarray(jax.random.randint(key, (8, 32, 32, 3), 0, 256), np.uint8),
           'mask': np.ones(8, bool)}
  targets = jnp.asarray(np.random.default_rng(0).integers(0, 2, (num_heads, 8)), jnp.float32)
  step = jax.jit(functools.partial(proposed.heads_train_step, primary_model=primary_model,
                                   heads_model=heads_model, input_kind='pixel',
                                   loss_fn=losses.sigmoid_bce, optimizer=optimizer))
  heads = init(heads_model, (1, 8, 8, 16))
  return step, base.new_state(heads, optimizer), constants, batch, targets, primary_model, heads_model


def test_the_heads_step_reads_the_primary_frozen_in_inference_mode():
  step, state, constants, batch, targets, primary_model, heads_model = _heads_step_setup()
  frozen = jax.tree.map(np.array, constants['primary'])
  _, step_metrics = step(state, constants, batch, targets, jnp.array([True, True]))
  x = base.preprocess(batch['image'], 'pixel', constants)

  @functools.partial(jax.jit, static_argnums=0)
  def loss_with_primary_in(train_mode: bool):
    primary = primary_model.apply(frozen, x, train=train_mode, mutable=['batch_stats'])[0]
    out = heads_model.apply({'params': state.params, 'batch_stats': state.batch_stats},
                            primary.mid_features, train=True, mutable=['batch_stats'])[0]
    return losses.sigmoid_bce(out.logit, targets, batch['mask'][None])

  np.testing.assert_allclose(step_metrics['loss'], loss_with_primary_in(False), rtol=1e-6)
  assert not np.allclose(step_metrics['loss'], loss_with_primary_in(True), rtol=1e-3)
  # The primary is a constant of the step (never in the state or the optimizer): unchanged.
  for _ in range(3):
    state, _ = step(state, constants, batch, targets, jnp.array([True, True]))
  jax.tree.map(np.testing.assert_array_equal, constants['primary'], frozen)


def test_a_stopped_head_keeps_params_statistics_and_adam_moments_while_others_train():
  step, state, constants, batch, targets, _, _ = _heads_step_setup(num_heads=3)
  state, _ = step(state, constants, batch, targets, jnp.array([True, True, True]))
  before = jax.tree.map(np.array, state)
  active = jnp.array([True, False, True])
  for _ in range(3):
    state, _ = step(state, constants, batch, targets, active)
  moved = {0: False, 2: False}
  for new, old in zip(jax.tree.leaves(state), jax.tree.leaves(before)):
    if np.ndim(old) == 0 or np.shape(old)[0] != 3:
      continue  # step counters
    np.testing.assert_array_equal(np.asarray(new)[1], old[1])  # params, BN stats, mu and nu
    for k in moved:
      moved[k] |= not np.array_equal(np.asarray(new)[k], old[k])
  assert all(moved.values())


def test_early_stopping_keeps_each_heads_best_epoch_and_stops_each_on_its_own():
  tracker = train.initial_tracker(2)
  best = {'params': {'w': np.zeros((2, 3))}, 'batch_stats': {}}
  val = [np.array([0.5, 0.9]), np.array([0.3, 1.0]), np.array([0.4, 1.1]), np.array([0.2, 1.2])]
  for epoch, losses_now in enumerate(val):
    state = base.TrainState(jnp.int32(epoch), {'w': np.full((2, 3), float(epoch))}, {}, None)
    best, tracker = train.update_early_stopping(tracker, best, state, losses_now, epoch,
                                                patience=2, stacked_outputs=True)
  # Head 0 improves at epochs 0, 1, 3; head 1 only at epoch 0 and stops after 2 bad epochs.
  assert tracker['best_epoch'].tolist() == [3, 0] and tracker['active'].tolist() == [True, False]
  np.testing.assert_array_equal(best['params']['w'], [[3, 3, 3], [0, 0, 0]])
  # One output: the best epoch's weights, not the last ones.
  single, best = train.initial_tracker(1), {'params': {'w': np.zeros(1)}, 'batch_stats': {}}
  for epoch, loss in enumerate([0.5, 0.3, 0.4]):
    state = base.TrainState(jnp.int32(epoch), {'w': np.full(1, float(epoch))}, {}, None)
    best, single = train.update_early_stopping(single, best, state, np.array([loss]), epoch, 5,
                                               stacked_outputs=False)
  assert best['params']['w'].tolist() == [1.0]


def test_phase2_starts_from_the_phase1_bundle_which_holds_its_best_epoch(quickstart,
                                                                        smoke_data_dir):
  workdir, _ = quickstart
  config = _config('phase2_synthetic', smoke_data_dir,
                   **{'init.from_run': str(workdir / 'phase1_synthetic')})
  _, family = evaluation.setup(config)
  optimizer = optim.make_optimizer(config)
  started = train.warm_start(family, config, family.init_state(jax.random.key(0), optimizer),
                             optimizer)
  spec, phase1, _ = _bundle(workdir / 'phase1_synthetic')
  jax.tree.map(np.testing.assert_array_equal, {'params': started.params,
                                               'batch_stats': started.batch_stats},
               phase1['primary'])
  lines = [json.loads(line) for line in
           (workdir / 'phase1_synthetic' / 'metrics.jsonl').read_text().splitlines()]
  val = [line['val/loss_0'] for line in lines if 'epoch' in line]
  assert spec.best_epochs == (int(np.argmin(val)) + 1,)  # the bundle is the best epoch's


def test_open_set_leave_one_out_fold_fits_thresholds_and_reports_every_protocol(
    quickstart, smoke_data_dir, tmp_path, capsys):
  """A heads run without one architecture: thresholds fitted at export, stored in the bundle,
  used by attribute; openset reports the left-out source as unseen and the seeds both ways."""
  from gta_jax.tools import attribute
  workdir, _ = quickstart
  config = chains.load_config_file(str(ROOT / 'configs' / 'openset_synthetic.py'),
                                   'without_tconv,smoke')
  with config.unlocked():
    config.data.data_dir = smoke_data_dir
    config.init.primary = str(workdir / 'phase2_synthetic')
  from gta_jax.data import loader
  dataset = loader.open_dataset(config.data, 'pixel')
  tconv = dataset.source_ids['tconv']
  for split, present in (('train', False), ('validation', False), ('test', True)):
    source = dataset.source(split)
    ids = {int(source[i]['source_id']) for i in range(len(source))}
    assert (tconv in ids) == present and len(ids) >= 4 - (not present), split
  folds = tmp_path / 'openset'
  train.train_and_evaluate(config, folds / 'without_tconv')
  spec = _bundle(folds / 'without_tconv')[0]
  assert set(spec.open_set) >= {'tpr95', 'doc', 'knn'} and len(spec.open_set['tpr95']) == 3
  # The kNN calibration: a bank of the known sources' training features in the bundle, and a
  # threshold that 99% of the known validation fakes pass (and at least that many do).
  run = openset_fit.HeadsRun.open(folds / 'without_tconv')
  knn, knn_threshold = openset_scores.load_knn(folds / 'without_tconv' / 'model', run.spec)
  assert knn.bank.shape == (spec.open_set['knn']['images'], 16 + 32 * 3)
  _, features, sources = run.outputs('validation')
  passing = knn(features[np.isin(sources, run.head_ids)]) >= knn_threshold
  record = spec.open_set['knn']
  assert record['acceptance'] == openset_scores.KNN_ACCEPTANCE and passing.mean() >= 0.99
  assert set(record['operating_points']) == {'0.95', '0.98', '0.99'}
  assert record['operating_points']['0.99'] == record['threshold']
  assert record['operating_points']['0.95'] >= record['operating_points']['0.99']
  out = tmp_path / 'openset.json'
  assert openset_tool.main(['--workdir', str(folds), '--json', str(out)]) == 0
  from gta_jax.io import outputs
  results = outputs.load(out)  # one fold: the run's own {protocol: metrics}
  assert json.loads(out.read_text())['written_by'] == 'gta_jax.openset'
  assert results == json.loads((folds / 'without_tconv' / 'results' / 'openset.json').read_text())
  assert results == json.loads((folds / 'openset.json').read_text())
  assert set(results) == {'unseen_architecture', 'unseen_seed_as_unknown', 'unseen_seed_as_known',
                          'unseen_dataset'}
  for entry in results.values():
    for key in ('auroc', 'oscr', 'tnr_at_tpr95', 'closed_set_accuracy'):
      assert 0 <= entry[key] <= 1
    assert set(entry['by_score']) == set(openset_scores.SCORES)  # the feature scores included
  assert set(results['unseen_architecture']['claimed_most_by']) == {'tconv'}
  assert results['unseen_seed_as_known']['known'] > results['unseen_seed_as_unknown']['known']
  # attribute uses the kNN calibration by default and says so; tpr95 on request; off restores 0.5.
  examples = tmp_path / 'images'
  chains.write_examples(config, examples)
  capsys.readouterr()
  assert attribute.main(['--model', str(folds / 'without_tconv'), str(examples)]) == 0
  printed = capsys.readouterr().out
  assert 'open set (knn, fitted on validation)' in printed
  assert '99% of the known validation fakes reach' in printed
  assert attribute.main(['--model', str(folds / 'without_tconv'), '--open-set', 'tpr95',
                         str(examples)]) == 0
  assert 'open set (tpr95, fitted on validation)' in capsys.readouterr().out
  assert attribute.main(['--model', str(folds / 'without_tconv'), '--open-set', 'off',
                         str(examples)]) == 0
  assert 'open set' not in capsys.readouterr().out
  # --open-set knn: heads claim at 0.5, and a fake under the kNN threshold is unknown as well.
  verdicts_json = tmp_path / 'verdicts.json'
  assert attribute.main(['--model', str(folds / 'without_tconv'), '--open-set', 'knn',
                         '--json', str(verdicts_json), str(examples)]) == 0
  assert 'kNN score' in capsys.readouterr().out
  records = outputs.load(verdicts_json)
  assert records and all(r['open_set_score']['threshold'] == knn_threshold for r in records)
  for r in records:
    if r['p_fake'] >= 0.5:
      unclaimed = max(r['p_heads'].values()) < 0.5
      assert (r['verdict'] == 'unknown') == (unclaimed or r['open_set_score']['knn'] < knn_threshold)
  for entry in results.values():
    assert 0 <= entry['closed_set_accuracy_knn'] <= 1 and 0 <= entry['unknown_flagged_knn'] <= 1
  assert attribute.main(['--model', str(workdir / 'phase2_synthetic'), '--open-set', 'doc',
                         str(examples)]) == 2  # a primary has no heads to calibrate


def test_class_weighted_bce_is_a_weighted_mean_that_balances_the_prior():
  logits = jnp.array([2.0, -1.0, 0.5, 0.0, 3.0])
  targets = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0])
  mask = jnp.array([1.0, 1.0, 1.0, 1.0, 0.0])  # the last is padding
  per_image = np.log1p(np.exp(-np.where(np.asarray(targets) == 1, 1, -1) * np.asarray(logits)))
  for negative, positive in ((4.0, 1.0), (1.0, 4.0), (0.25, 0.5)):
    weights = np.where(np.asarray(targets) == 1, positive, negative) * np.asarray(mask)
    np.testing.assert_allclose(
        losses.sigmoid_bce_class_weighted(logits, targets, mask, negative_weight=negative,
                                          positive_weight=positive),
        (per_image * weights).sum() / weights.sum(), rtol=1e-6)
  # Stacked heads: targets [K, B], mask [1, B] -> one weighted mean per head, each over its own
  # weights (head 1 has a single positive among five).
  head_targets = jnp.stack([targets, jnp.array([0.0, 0.0, 1.0, 0.0, 0.0])])
  per_head = losses.sigmoid_bce_class_weighted(
      jnp.stack([logits, logits]), head_targets, mask[None, :], positive_weight=4.0)
  for k in range(2):
    t = np.asarray(head_targets[k])
    loss = np.log1p(np.exp(-np.where(t == 1, 1, -1) * np.asarray(logits)))
    weights = np.where(t == 1, 4.0, 1.0) * np.asarray(mask)
    np.testing.assert_allclose(per_head[k], (loss * weights).sum() / weights.sum(), rtol=1e-6)
  # An uninformative input seen as 1 real : 4 fakes: the loss's minimiser is p = 0.5 at real weight
  # 4 (the prior 0.8 at weight 1); a head seeing 1 own : 4 others: 0.5 at positive weight 4.
  fakes = jnp.array([0.0, 1.0, 1.0, 1.0, 1.0])
  for the_targets, weights, prior in ((fakes, (1.0, 1.0), 0.8), (fakes, (4.0, 1.0), 0.5),
                                      (1 - fakes, (1.0, 1.0), 0.2), (1 - fakes, (1.0, 4.0), 0.5)):
    grid = jnp.linspace(-3, 3, 601)
    losses_at = jax.vmap(lambda z: losses.sigmoid_bce_class_weighted(
        jnp.full(5, z), the_targets, jnp.ones(5), negative_weight=weights[0],
        positive_weight=weights[1]))(grid)
    assert float(jax.nn.sigmoid(grid[jnp.argmin(losses_at)])) == pytest.approx(prior, abs=0.01)


def test_dropping_the_hardest_positives_leaves_out_the_worst_scored_share_of_each_output():
  """losses.sigmoid_bce_hardest_positives_dropped against a numpy transcription: per output, the
  floor(drop * positives) positives with the highest loss are left out; negatives and padding as
  in the class-weighted loss; the choice is not differentiated (no gradient through the ranking)."""
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(3, 12)) * 2, jnp.float32)
  targets = jnp.asarray(rng.uniform(size=(3, 12)) < 0.6, jnp.float32)
  mask = jnp.asarray(np.r_[np.ones(10), np.zeros(2)], jnp.float32)  # the last two are padding

  def transcribed(z, t, drop):
    z, t, m = np.asarray(z, np.float64), np.asarray(t), np.asarray(mask)
    loss = np.log1p(np.exp(-np.where(t == 1, 1, -1) * z))
    positives = np.flatnonzero((t == 1) & (m > 0))
    left_out = positives[np.argsort(-loss[positives])][:int(np.floor(drop * len(positives)))]
    weights = np.where(t == 1, 2.0, 3.0) * m
    weights[left_out] = 0
    return (loss * weights).sum() / weights.sum()

  for drop in (0.0, 0.2, 0.5, 0.9):
    got = losses.sigmoid_bce_hardest_positives_dropped(logits, targets, mask[None, :], drop=drop,
                                                        negative_weight=3.0, positive_weight=2.0)
    np.testing.assert_allclose(got, [transcribed(logits[k], targets[k], drop) for k in range(3)],
                               rtol=1e-5)
  np.testing.assert_allclose(
      losses.sigmoid_bce_hardest_positives_dropped(logits, targets, mask[None, :], drop=0.0),
      losses.sigmoid_bce_class_weighted(logits, targets, mask[None, :]), rtol=1e-6)
  # A left-out positive gets no gradient; a kept one and every negative do.
  z, t = jnp.array([4.0, -4.0, 1.0, 0.0]), jnp.array([1.0, 1.0, 1.0, 0.0])
  grad = jax.grad(lambda z: losses.sigmoid_bce_hardest_positives_dropped(
      z, t, jnp.ones(4), drop=0.34))(z)
  assert grad[1] == 0 and grad[0] != 0 and grad[2] != 0 and grad[3] != 0


def test_crosstest_scores_every_variant_split_of_the_variants_counterpart(
    quickstart, smoke_data_dir, tmp_path, capsys):
  """A run on `smoke` is cross-tested on `smoke_variants`, which holds the same images plus one
  split per generator variant; every figure agrees with the confusion matrix it comes with."""
  from gta_jax.data import loader
  from gta_jax.data import pipeline
  from gta_jax.tools import crosstest
  generation = builders.module('synthetic_fingerprints.generation')
  workdir, _ = quickstart
  phase3 = workdir / 'phase3_synthetic'
  out = tmp_path / 'crosstest.json'
  assert crosstest.main(['--workdir', str(phase3), '--json', str(out)]) == 0
  printed = capsys.readouterr().out
  from gta_jax.io import outputs
  results = outputs.load(out)
  assert json.loads((phase3 / 'results' / 'crosstest.json').read_text()) == results
  assert set(results) == set(generation.VARIANT_SPLITS) | {'real', 'test_cross_seed'}
  for split in generation.VARIANT_SPLITS:
    assert split in printed
  # The shared splits are the smoke config's own images, so the run's primary and heads apply.
  smoke = pipeline.load_builder('synthetic_fingerprints', 'smoke', smoke_data_dir)
  variants = pipeline.load_builder('synthetic_fingerprints', 'smoke_variants', smoke_data_dir)
  for split in ('train', 'test'):
    a, b = (pipeline.data_source(builder, split) for builder in (smoke, variants))
    records = lambda s: sorted((str(s[i]['source']), s[i]['image'].tobytes()) for i in range(len(s)))
    assert records(a) == records(b), split
  # Each variant image names its generator; its label is its architecture's.
  unseen = pipeline.data_source(variants, 'test_unseen_seeds')
  names = {(str(unseen[i]['source'], 'utf-8'), str(unseen[i]['architecture'], 'utf-8'),
            int(unseen[i]['source_id'])) for i in range(len(unseen))}
  assert ('tconv.unseen_seed_3', 'tconv', 1) in names and len(names) == 12
  dataset = loader.open_dataset(_config('phase3_synthetic', smoke_data_dir).data, 'pixel')
  assert results['real']['count'] == sum(
      int(r['label'] == 0) for r in (dataset.source('test')[i] for i in range(dataset.size('test'))))
  assert 0 <= results['real']['false_claims'] <= 1
  assert results['real']['false_claims'] >= max(results['real']['by_head'].values())
  heads = ('tconv', 'nearest', 'bilinear', 'pixelshuffle')
  for split, entry in results.items():
    if split == 'real':
      continue
    assert entry['count'] == variants.info.splits[split].num_examples
    matrix, classes = np.array(entry['confusion_matrix']), entry['classes']
    assert matrix.sum() == entry['count']
    # Column 0: attributed to no head (the paper's multiclass rule calls those real).
    assert entry['unclaimed'] == pytest.approx(matrix[:, classes.index(0)].sum() / entry['count'])
    if split == 'test_unseen_architectures':  # no head for cubic / lanczos3: no recall, no accuracy
      assert classes[-1] == -1 and entry['recall'] == {} and entry['accuracy'] is None
      continue
    assert set(entry['recall']) == set(heads) and -1 not in classes
    for name in heads:  # a head claims at least the images attributed to it
      row = matrix[classes.index(dataset.source_ids[name])]
      assert entry['recall'][name] >= row[classes.index(dataset.source_ids[name])] / row.sum() - 1e-9
    assert entry['accuracy'] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert entry['mean_recall'] == pytest.approx(np.mean(list(entry['recall'].values())))


def test_crosstest_refuses_a_detection_run_in_one_line(quickstart, capsys):
  from gta_jax.tools import crosstest
  workdir, _ = quickstart
  assert crosstest.main(['--workdir', str(workdir / 'phase2_synthetic')]) == 2
  assert 'detection run' in capsys.readouterr().err
  assert crosstest.main(['--workdir', str(workdir / 'nothing_here')]) == 2


def test_openset_scores_the_variant_datas_unseen_architectures_without_retraining(
    quickstart, tmp_path):
  """--variants adds the generator-variant data's unseen architectures as a protocol."""
  workdir, _ = quickstart
  run = tmp_path / 'phase3'
  shutil.copytree(workdir / 'phase3_synthetic', run)  # fitting writes into the bundle
  out = tmp_path / 'openset.json'
  assert openset_tool.main(['--workdir', str(run), '--variants', '--json', str(out)]) == 0
  entry = json.loads(out.read_text())['unseen_variant_architecture']
  assert set(entry['claimed_most_by']) == {'cubic', 'lanczos3'}
  assert 0 <= entry['auroc'] <= 1 and 0 <= entry['oscr'] <= 1
  assert openset_tool.main(['--workdir', str(run), '--json', str(out)]) == 0
  assert 'unseen_variant_architecture' not in json.loads(out.read_text())




def test_the_eta_counts_the_epochs_early_stopping_leaves():
  tracker = train.initial_tracker(3)
  tracker['bad_epochs'] = np.array([0, 1, 2], np.int32)
  tracker['active'] = np.array([True, True, False])
  # Epoch 2 (0-based) running at step 25 of 10 per epoch; patience 3: output 0 may go 3 more
  # epochs without improving (this one included), so the run ends with epoch 4 at the latest
  # unless an output improves; max_epochs 10 bounds it otherwise.
  assert train.remaining_steps(tracker, 25, 2, 10, 10, 3) == (50 - 25, 100 - 25)
  assert train.remaining_steps(tracker, 25, 2, 10, 4, 3) == (40 - 25, 40 - 25)


def test_lineage_names_resolve_beside_the_workdir_and_paths_stay_as_given(tmp_path):
  from gta_jax.io import run_records
  workdir = tmp_path / 'scratch' / 'phase2_synthetic'
  assert run_records.resolve_run('phase1_synthetic', workdir) == str(
      tmp_path / 'scratch' / 'phase1_synthetic')
  assert run_records.resolve_run('phase1_synthetic') == 'runs/phase1_synthetic'
  for given in ('runs/quickstart/phase2_synthetic', '/abs/run', 'release.h5', ''):
    assert run_records.resolve_run(given, workdir) == given
  config = _config('phase2_synthetic', 'unused')
  resolved = run_records.resolve_lineage(config, workdir)
  assert resolved.init.from_run == str(tmp_path / 'scratch' / 'phase1_synthetic')
  assert config.init.from_run == 'phase1_synthetic'  # the caller's config is left as it was
