"""Set-up and evaluation of a run: open its dataset and family, fit its outputs' calibration on
the validation split, score weights with the evaluators of config.evals (the same runner a
training ends with), re-score a finished run, or score it on its dataset's generator-variant
splits (crosstest)."""
import dataclasses
import pathlib

import ml_collections
import numpy as np

from gta_jax import errors
from gta_jax import evaluators
from gta_jax import families
from gta_jax import run_config
from gta_jax.data import loader
from gta_jax.data import pipeline
from gta_jax.evaluators import common
from gta_jax.io import checkpoints
from gta_jax.io import distributed
from gta_jax.io import run_records
from gta_jax.io import workdir_lock
from gta_jax.io.run_records import load_run_config
from gta_jax.io.writers import log
from gta_jax.io.writers import write_json_atomic
from gta_jax.scoring import calibration
from gta_jax.scoring import verdicts


def thresholds(config) -> verdicts.Thresholds:
  return verdicts.Thresholds(config.eval.threshold, config.eval.threshold)


def setup(config, workdir=None) -> tuple[loader.Dataset, families.Family]:
  """Opens the run's dataset and builds its model family (checking `workdir`'s records)."""
  run_config.check(config)
  config = run_records.resolve_lineage(config, workdir)
  dataset = loader.open_dataset(config.data, config.model.input)
  return dataset, families.build(config, dataset, workdir)


def _predict_fn(config, family, variables: dict):
  """uint8 images -> (p_fake, p_heads) of `variables` (what the family trains)."""
  distributed.check_batch_size(config.eval.batch_size, 'eval.batch_size')
  predict_step = family.make_predict_step()
  constants = distributed.replicate(family.constants())
  variables = distributed.replicate(variables)
  return lambda images: predict_step(variables, constants, images)


def fit_calibration(config, family, variables: dict) -> calibration.Calibration:
  """Each output's temperature and fixed-FPR thresholds (gta_jax/scoring/calibration.py), fitted
  on the validation split as the run validates: in its training mode with the fixed validation
  seed, the images early stopping chose the weights on. A softmax's marginals get thresholds but
  no temperature."""
  outputs = family.outputs()
  mode = config.data.train_mode
  scores = common.score_split(_predict_fn(config, family, variables), family.dataset,
                              'validation', mode=mode, seed=pipeline.VALIDATION_SEED,
                              batch_size=config.eval.batch_size)
  fit = {'split': 'validation', 'mode': mode, 'seed': pipeline.VALIDATION_SEED,
         'images': int(len(scores['label'])),
         'digest': calibration.data_digest(scores['label'], scores['source_id'], scores['p_fake'],
                                           scores['p_heads'])}

  def output(labels, p):
    return calibration.fit_output(labels, p, outputs.sigmoid_outputs) | {'fit': fit}

  result = calibration.Calibration(
      detection=output(scores['label'] != 0, scores['p_fake']) if outputs.detection else None,
      heads=tuple(output(scores['source_id'] == source, scores['p_heads'][k])
                  for k, source in enumerate(outputs.head_ids)))
  log(f'calibration fitted on validation ({mode}): '
      + (result.describe(outputs.head_names) or 'thresholds only (softmax outputs)'))
  return result


def evaluate(config, family, variables: dict, predictions_dir=None,
             fitted: calibration.Calibration | None = None) -> dict:
  """Every evaluator of config.evals on `variables` (what the family trains) -> nested metrics.
  fitted: the outputs' calibration (temperatures, operating points chosen on validation), whose
  figures the test sets then report beside those of the scores as they are."""
  built = evaluators.build(
      config.evals, _predict_fn(config, family, variables), family.dataset,
      outputs=dataclasses.replace(family.outputs(), calibration=fitted),
      thresholds=thresholds(config), batch_size=config.eval.batch_size,
      predictions_dir=predictions_dir)
  return evaluators.run_all(built)


def stored_calibration(workdir: pathlib.Path) -> calibration.Calibration | None:
  """The calibration a finished run's bundle holds (None: exported before it was fitted)."""
  spec = checkpoints.read_model_spec(workdir / 'model')
  return calibration.Calibration.from_json(spec.calibration, len(spec.head_names))


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
    fitted = stored_calibration(workdir)
    if fitted is None:  # a bundle of before: fitted here for the figures, the bundle unchanged
      log(f'{workdir}/model holds no calibration (exported before it was fitted); fitting it on '
          'the validation split for these figures only: the bundle is not rewritten, so '
          'attribute reports its probabilities as they are.')
      fitted = fit_calibration(config, family, trained)
    results = evaluate(config, family, trained, workdir / 'results' / 'predictions', fitted)
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
