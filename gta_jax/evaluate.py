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

from gta_jax import checkpoints, errors, input_pipeline, train
from gta_jax.run_records import load_run_config
from gta_jax.writers import log


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
  _, family = train.setup(config, workdir)
  spec, variables, _ = checkpoints.load_model_bundle(workdir / 'model')
  return config, family, family.variables_from_bundle(spec, variables, workdir / 'model')


def evaluate_run(workdir, test_sets=None) -> dict:
  workdir = pathlib.Path(workdir)

  def adjust(config):
    if test_sets:
      config.evals.test.modes = tuple(test_sets)

  config, family, trained = load_finished_run(workdir, adjust)
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
