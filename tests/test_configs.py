"""Config builders are strict, and runs saved under older field names still load."""
import json

from ml_collections.config_flags import config_path
import pytest

from configs import common
from conftest import ROOT
from gta_jax import chains
from gta_jax import families
from gta_jax.io import run_records


def test_phase_builders_refuse_what_does_not_exist():
  with pytest.raises(ValueError, match='detector phase=3'):
    common.detector_phase('', dataset='ganfp', phase=3)
  with pytest.raises(ValueError, match="dataset='imagenet'"):
    common.detector_phase('', dataset='imagenet', phase=1)
  with pytest.raises(ValueError, match='sources='):
    common.heads_phase('', dataset='ganfp', phase=3, sources=())
  with pytest.raises(ValueError, match='input_kind'):
    common.heads_phase('', dataset='ganfp', phase=3, sources=('progan',), input_kind='rgb')
  with pytest.raises(ValueError, match='unknown config argument'):
    common.detector_phase('jpeg', dataset='ganfp', phase=1)  # :jpeg is a phase-II variant


def test_phase_files_wire_each_phase_to_the_run_before_it():
  load = lambda name, arg='': chains.load_config_file(str(ROOT / 'configs' / f'{name}.py'), arg)
  assert load('phase2_ganfp', 'crop').init.from_run == 'phase1_ganfp'
  assert load('phase2_ganfp', 'crop').name == 'phase2_ganfp_crop'
  dct = load('phase4_progan_dct')
  assert (dct.name, dct.init.from_run, dct.model.input) == ('phase4_progan_dct',
                                                            'phase3_progan_dct', 'dct')
  assert load('phase3_progan_dct').init.primary == 'phase2_ganfp_dct'
  for name in ('phase3_faceshq', 'phase4_synthetic', 'baseline_postpool'):
    config = load(name, 'smoke')
    assert config.model.family in families.FAMILIES
    assert config.task in families.FAMILIES[config.model.family].tasks


def test_an_open_set_fold_trains_the_recipe_it_names_without_its_left_out_source():
  load = lambda name, arg: chains.load_config_file(str(ROOT / 'configs' / f'{name}.py'), arg)
  paper = load('openset_synthetic', 'without_nearest')
  assert paper.name == 'openset_synthetic/without_nearest'
  assert paper.data.exclude_sources == ('nearest',) and 'nearest' not in paper.sources
  assert paper.recipe.patches == 0 and not paper.recipe.frequency_inputs
  fold = load('openset_synthetic', 'without_nearest,frequency')
  assert fold.name == 'openset_synthetic_frequency/without_nearest'
  assert fold.data.exclude_sources == ('nearest',)
  full = load('architecture_attribution', 'frequency,one_seed')  # what the --variants row judged
  assert fold.recipe.to_dict() == full.recipe.to_dict()
  assert fold.optim.max_epochs == full.optim.max_epochs == 6
  assert fold.data.config == full.data.config == 'default'
  several = load('architecture_attribution', 'frequency')  # the config's default: 5 seeds each
  assert several.data.config == 'multiseed5' and several.optim.max_epochs == 10
  assert several.optim.weight_average_decay == 0.99 and full.optim.weight_average_decay == 0
  assert several.recipe.to_dict() == full.recipe.to_dict()
  assert several.name == 'architecture_attribution'
  assert full.name == 'architecture_attribution_one_seed'
  # The architecture recipes keep the positive weight they were measured with; the paper's heads
  # take the phase-III default.
  assert fold.optim.head_positive_weight == full.optim.head_positive_weight == 4.0
  assert paper.optim.head_positive_weight == load('phase3_synthetic', '').optim.head_positive_weight
  with pytest.raises(ValueError, match='one fold'):
    load('openset_synthetic', 'without_nearest,paper,frequency')
  with pytest.raises(ValueError, match='unknown config argument'):
    load('openset_synthetic', 'without_nearest,frequencies')


def test_only_the_builtin_configs_depart_from_the_release_training():
  load = lambda name: chains.load_config_file(str(ROOT / 'configs' / f'{name}.py'))
  for phase in (1, 2):  # the release: detection at 1e-3, both classes weighing 1
    ganfp = load(f'phase{phase}_ganfp')
    assert (ganfp.optim.learning_rate, ganfp.optim.real_class_weight) == (1e-3, 1.0)
    assert ganfp.optim.drop_hardest_positives == 0.0
  for name in ('phase2_ganfp', 'phase4_progan', 'phase4_faceshq'):  # the paper's stacked perturbations
    assert load(name).data.train_mode == 'multi'
  assert load('phase4_synthetic').data.train_mode == 'one'
  for name in ('phase1_synthetic', 'phase3_synthetic', 'phase3_progan'):
    assert load(name).data.train_mode == 'clean'
  assert load('phase1_synthetic').optim.schedule == 'constant'  # the release's constant rate
  for name in ('phase3_progan', 'phase4_progan', 'phase3_faceshq'):
    assert (load(name).optim.learning_rate, load(name).optim.head_positive_weight) == (1e-4, 1.0)
  # Built-in data (1 real : 4 fakes; each head 1 own : 4 others): balanced classes, phase II
  # continuing phase I at a tenth of its rate.
  assert [load(f'phase{p}_synthetic').optim.learning_rate for p in (1, 2, 3, 4)] == [
      1e-3, 1e-4, 1e-3, 1e-3]
  assert load('phase2_synthetic').optim.real_class_weight == 4.0
  # ... and at most one perturbation per image in phase II; ':jpeg' / ':crop' still choose theirs.
  assert load('phase2_synthetic').data.train_mode == 'one'
  # ... with the hardest quarter of each batch's fakes out of its loss (phase II only).
  assert [load(f'phase{p}_synthetic').optim.drop_hardest_positives for p in (1, 2, 3, 4)] == [
      0.0, 0.25, 0.0, 0.0]
  assert chains.load_config_file(str(ROOT / 'configs' / 'phase2_synthetic.py'),
                                 'jpeg').data.train_mode == 'jpeg'
  assert load('phase3_synthetic').optim.head_positive_weight == 2.0
  assert load('phase4_synthetic').optim.head_positive_weight == 2.0
  # Averaged weights for the paper's heads in phase III only (phase IV fine-tunes them as they are).
  assert [load(f'phase{p}_synthetic').optim.weight_average_decay for p in (1, 2, 3, 4)] == [
      0.0, 0.0, 0.99, 0.0]
  # Epoch budgets of the 15-minute quickstart (phase IV at 3 let tconv's clean F1 fall below 0.9).
  assert [(load(f'phase{p}_synthetic').optim.max_epochs, load(f'phase{p}_synthetic').optim.patience)
          for p in (1, 2, 3, 4)] == [(6, 2), (6, 2), (10, 3), (6, 3)]


def test_a_run_saved_before_sources_family_and_evaluators_loads_with_todays_fields(tmp_path):
  old = json.loads(chains.load_config_file(str(ROOT / 'configs' / 'phase3_synthetic.py'))
                   .to_json_best_effort())
  old['heads'] = old.pop('sources')
  del old['model']['family'], old['evals'], old['eval']['threshold']
  old['model']['arch'], old['task'] = 'proposed', 'detection'
  old['eval']['test_sets'] = ['clean', 'blur']
  (tmp_path / 'config.json').write_text(json.dumps(old))
  config = run_records.load_run_config(tmp_path)
  assert config.sources == common.SYNTHETIC_SOURCES and config.model.family == 'heads'
  assert config.task == 'attribution' and config.evals.test.modes == ('clean', 'blur')
  assert config.eval.threshold == 0.5 and config.evals.test_cross_seed.type == 'cross_seed'


def test_the_data_dir_follows_tfds_data_dir(monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', '/datasets/tfds')
  assert common.get_config().data.data_dir == '/datasets/tfds'
  monkeypatch.delenv('TFDS_DATA_DIR')
  assert common.get_config().data.data_dir == 'data/tfds'


@pytest.mark.parametrize('key, value, message', [
    ('optim.batch_size', 0, 'whole number >= 1'),
    ('checkpoint_every_steps', 0, 'whole number >= 1'),
    ('log_every_steps', 0, 'whole number >= 1'),
    ('optim.max_epochs', 0, 'whole number >= 1'),
    ('model.bn_momentum', float('nan'), r'\[0, 1\)'),
    ('optim.learning_rate', -1e-3, 'positive'),
    ('optim.head_positive_weight', 0.0, 'positive'),
    ('optim.drop_hardest_positives', 1.0, r'share in \[0, 1\)'),
    ('data.train_mode', 'sharpen', 'choose one of clean, multi'),
    ('optim.schedule', 'linear', 'choose constant or cosine'),
    ('model.conv_impl', 'fast', 'auto, cpu, lax'),
])
def test_a_config_that_cannot_work_is_refused_before_the_workdir_exists(tmp_path, key, value,
                                                                         message):
  from gta_jax import errors
  from gta_jax import train
  config = chains.load_config_file(str(ROOT / 'configs' / 'phase1_synthetic.py'), 'smoke')
  with config.unlocked():
    config_path.set_value(key, config, value)
  with pytest.raises(errors.ConfigError, match=f'config.{key}.*{message}'):
    train.train_and_evaluate(config, tmp_path / 'run')
  assert not (tmp_path / 'run').exists()


def test_an_unwritable_workdir_is_refused_before_the_data_is_opened(tmp_path, monkeypatch):
  from gta_jax import errors
  from gta_jax import train
  from gta_jax.data import loader
  config = chains.load_config_file(str(ROOT / 'configs' / 'phase1_synthetic.py'), 'smoke')
  opened = []
  monkeypatch.setattr(loader, 'open_dataset', lambda *a: opened.append(a))
  blocked = tmp_path / 'a_file'
  blocked.write_text('x')
  with pytest.raises(errors.ConfigError, match='workdir .*a_file/run'):
    train.train_and_evaluate(config, blocked / 'run')
  with pytest.raises(errors.ConfigError, match='exists and is not a folder'):
    train.train_and_evaluate(config, blocked)
  assert opened == [] and blocked.read_text() == 'x'


@pytest.mark.slow
def test_launch_shows_a_real_bug_with_its_traceback(tmp_path):
  """Only the project's own errors become one-line messages; a bug keeps its traceback."""
  import subprocess
  import sys
  script = tmp_path / 'bug.py'
  script.write_text(f'import sys; sys.path.insert(0, {str(ROOT)!r}); sys.argv = ["launch.py", '
                    f'"--config={ROOT}/configs/phase1_synthetic.py:smoke"]\n'
                    'import launch\n'
                    'def broken(argv):\n  raise AttributeError("a bug, not a config override")\n'
                    'launch.main = broken\nlaunch.run()\n')
  result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
  assert result.returncode != 0
  assert 'Traceback' in result.stderr and 'a bug, not a config override' in result.stderr
  assert 'bad config override' not in result.stderr


def test_a_chain_passes_on_what_it_can_and_refuses_what_it_would_lose(smoke_data_dir, tmp_path):
  from gta_jax import errors
  config = chains.load_config_file(str(ROOT / 'configs' / 'quickstart.py'), 'smoke')
  with config.unlocked():
    config.data.data_dir, config.seed, config.model.conv_impl = smoke_data_dir, 7, 'lax'
  seen = []
  chains.run_chain(config, tmp_path, lambda phase, workdir: seen.append(phase) or {})
  assert [p.name for p in seen] == ['phase1_synthetic', 'phase2_synthetic', 'phase3_synthetic',
                                    'phase4_synthetic']
  assert {(p.seed, p.model.conv_impl, p.data.data_dir) for p in seen} == {
      (7, 'lax', smoke_data_dir)}
  # Each phase names the run it builds on; it resolves beside the phase's workdir in the chain.
  from gta_jax.io import run_records
  assert seen[1].init.from_run == 'phase1_synthetic'
  assert run_records.resolve_run(seen[1].init.from_run, tmp_path / 'phase2_synthetic') == str(
      tmp_path / 'phase1_synthetic')
  with config.unlocked():
    config.optim.learning_rate = 0.1
  with pytest.raises(errors.ConfigError, match='optim.learning_rate.*would be lost'):
    chains.run_chain(config, tmp_path / 'other', lambda phase, workdir: {})
