"""Re-run a finished run's evaluation, optionally on other test sets.

python -m gta_jax.evaluate --workdir runs/phase3_synthetic [--test-sets clean,multi,jpeg,crop,blur,noise]

Scores the run's best weights (workdir/model) with the evaluators of its config (the test split
under each fixed-seed perturbation, plus the external and cross-seed splits where the dataset has
them), the same runner training ends with, and updates workdir/results/metrics.json (test sets
not named keep their results) and results/predictions/*.npz.
"""
import argparse
import json
import pathlib
import sys

import ml_collections

from gta_jax import chains, checkpoints, errors, input_pipeline, train
from gta_jax.writers import log


def upgrade_record(record: dict) -> dict:
  """A stored config.json -> today's field names (runs written before config.sources,
  config.model.family and config.evals existed)."""
  record = json.loads(json.dumps(record))
  model = record.setdefault('model', {})
  if 'heads' in record:
    record['sources'] = record.pop('heads')
  if 'arch' in model:
    arch = model.pop('arch')
    if arch == 'proposed':
      model['family'] = 'heads' if record.get('sources') else 'primary'
      record['task'] = 'attribution' if record.get('sources') else 'detection'
    else:
      model['family'] = arch
  test_sets = record.get('eval', {}).pop('test_sets', None)
  if test_sets is not None:
    record.setdefault('evals', {}).setdefault('test', {})['modes'] = test_sets
  return record


def _tuples(value):
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def load_run_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
  """A run's stored config over today's base config (fields added since keep their defaults)."""
  record = upgrade_record(json.loads((pathlib.Path(workdir) / 'config.json').read_text()))
  config = chains.load_config_file(str(chains.ROOT / 'configs' / 'common.py'))
  with config.unlocked():
    config.update(_tuples(record))
  return config


def evaluate_run(workdir, test_sets=None) -> dict:
  workdir = pathlib.Path(workdir)
  if not checkpoints.is_model_bundle(workdir / 'model') or not (workdir / 'config.json').is_file():
    raise errors.MissingRunError(f'{workdir} holds no finished run (expected config.json and model/); '
                            'train it first with python launch.py --config=...')
  config = load_run_config(workdir)
  config.init.primary, config.init.from_run = str(workdir / 'model'), ''
  if test_sets:
    config.evals.test.modes = tuple(test_sets)
  _, family = train.setup(config, workdir)  # the heads' primary is the bundle's, digest-checked
  spec, variables, _ = checkpoints.load_model_bundle(workdir / 'model')
  trained = family.variables_from_bundle(spec, variables, workdir / 'model')
  results = train.evaluate(config, family, trained, workdir / 'results' / 'predictions')
  out = workdir / 'results' / 'metrics.json'
  if out.is_file():  # keep the test sets this call did not re-score
    results = json.loads(out.read_text()) | results
  out.write_text(json.dumps(results, indent=2) + '\n')
  log(f'wrote {out}')
  return results


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m gta_jax.evaluate', description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--test-sets', help='comma-separated: ' + ','.join(input_pipeline.TEST_SET_SEEDS))
  args = parser.parse_args(argv)
  test_sets = tuple(args.test_sets.split(',')) if args.test_sets else None
  try:
    evaluate_run(args.workdir, test_sets)
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
