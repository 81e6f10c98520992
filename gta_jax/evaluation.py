"""Set-up and evaluation of a run: open its dataset and family, score weights with the
evaluators of config.evals (the same runner a training ends with), re-score a finished run, or
score it on its dataset's generator-variant splits (crosstest)."""
import pathlib

import ml_collections
import numpy as np

from gta_jax import errors
from gta_jax import evaluators
from gta_jax import families
from gta_jax import run_config
from gta_jax.data import loader
from gta_jax.data import pipeline
from gta_jax.io import checkpoints
from gta_jax.io import distributed
from gta_jax.io import run_records
from gta_jax.io import workdir_lock
from gta_jax.io.run_records import load_run_config
from gta_jax.io.writers import log
from gta_jax.io.writers import write_json_atomic
from gta_jax.scoring import verdicts


def thresholds(config) -> verdicts.Thresholds:
  return verdicts.Thresholds(config.eval.threshold, config.eval.threshold)


def setup(config, workdir=None) -> tuple[loader.Dataset, families.Family]:
  """Opens the run's dataset and builds its model family (checking `workdir`'s records)."""
  run_config.check(config)
  config = run_records.resolve_lineage(config, workdir)
  dataset = loader.open_dataset(config.data, config.model.input)
  return dataset, families.build(config, dataset, workdir)


def evaluate(config, family, variables: dict, predictions_dir=None) -> dict:
  """Every evaluator of config.evals on `variables` (what the family trains) -> nested metrics."""
  distributed.check_batch_size(config.eval.batch_size, 'eval.batch_size')
  predict_step = family.make_predict_step()
  constants = distributed.replicate(family.constants())
  variables = distributed.replicate(variables)
  built = evaluators.build(
      config.evals, lambda images: predict_step(variables, constants, images), family.dataset,
      outputs=family.outputs(), thresholds=thresholds(config), batch_size=config.eval.batch_size,
      predictions_dir=predictions_dir)
  return evaluators.run_all(built)


def load_finished_run(workdir: pathlib.Path, adjust=None):
  """A finished run's config (with `adjust(config)` applied), family and best weights, the
  heads' primary read from the run's own bundle (digest-checked) -> (config, family, trained)."""
  if not checkpoints.is_model_bundle(workdir / 'model') or not (workdir / 'config.json').is_file():
    raise errors.MissingRunError(f'{workdir} holds no finished run (expected config.json and model/); '
                            'train it first with python launch.py --config=...')
  config = load_run_config(workdir)
  config.init.primary, config.init.from_run = str(workdir / 'model'), ''
  if adjust is not None:
    adjust(config)
  _, family = setup(config, workdir)
  spec, variables, _ = checkpoints.load_model_bundle(workdir / 'model')
  return config, family, family.variables_from_bundle(spec, variables, workdir / 'model')


def evaluate_run(workdir, test_sets=None) -> dict:
  workdir = pathlib.Path(workdir)

  def adjust(config):
    if test_sets:
      config.evals.test.modes = tuple(test_sets)

  with workdir_lock.locked(workdir, 'evaluation', distributed.is_main_process(),
                           distributed.main_process_says):
    config, family, trained = load_finished_run(workdir, adjust)
    results = evaluate(config, family, trained, workdir / 'results' / 'predictions')
    out = workdir / 'results' / 'metrics.json'
    earlier = run_records.read_results(out)
    if earlier:  # keep the test sets this call did not re-score
      results = earlier | results
    write_json_atomic(out, results)
  log(f'wrote {out}')
  return results


def crosstest_run(workdir, data_dir=None) -> dict:
  """A finished run -> {split: metrics} (see the module docstring), also written to its results."""
  workdir = pathlib.Path(workdir)

  def adjust(config):
    if data_dir:
      config.data.data_dir = str(data_dir)
    config.data.config = pipeline.variants_config(config.data.name, config.data.config)
    config.evals = ml_collections.ConfigDict({'crosstest': {'type': 'variant_splits'}})

  with workdir_lock.locked(workdir, 'crosstest', distributed.is_main_process(),
                           distributed.main_process_says):
    return _crosstest_run(workdir, adjust)


def _crosstest_run(workdir, adjust) -> dict:
  config, family, trained = load_finished_run(workdir, adjust)
  if not family.outputs().head_names:
    raise errors.ConfigError(f'{workdir} is a detection run; crosstest scores attribution runs '
                             '(phase III/IV heads or a multiclass baseline).')
  results = evaluate(config, family, trained).get('crosstest', {})
  if len(results) <= 1:  # only the real images: nothing to cross-test on
    raise errors.ConfigError(
        f'{config.data.name}/{config.data.config} has no generator-variant test splits (test_* '
        'besides test and test_external); the built-in data has them in its `variants` config.')
  for split, entry in results.items():
    if split != 'real':
      entry['mean_recall'] = (float(np.mean(list(entry['recall'].values())))
                              if entry.get('recall') else None)
  out = workdir / 'results' / 'crosstest.json'
  write_json_atomic(out, results)
  log(f'wrote {out}')
  return results
