"""Re-run a finished run's evaluation, optionally on other test sets.

python -m gta_jax.evaluate --workdir runs/phase3_synthetic [--test-sets clean,multi,jpeg,crop,blur,noise]

Scores the run's best weights (workdir/model) on every image of the test split under each
fixed-seed perturbation, plus the external and cross-seed splits where the dataset has them, and
rewrites workdir/results/metrics.json and results/predictions/*.npz.
"""
import argparse
import json
import pathlib
import sys

import ml_collections

from gta_jax import checkpoints, input_pipeline, train


def load_run_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
  record = json.loads((workdir / 'config.json').read_text())
  config = ml_collections.ConfigDict(record)
  config.heads = tuple(config.heads)
  config.chain = tuple(config.chain)
  config.eval.test_sets = tuple(config.eval.test_sets)
  if 'conv_impl' not in config.model:  # runs written before the field existed
    config.model.conv_impl = 'auto'
  return config


def evaluate_run(workdir, test_sets=None) -> dict:
  workdir = pathlib.Path(workdir)
  if not checkpoints.is_model_bundle(workdir / 'model') or not (workdir / 'config.json').is_file():
    raise FileNotFoundError(f'{workdir} holds no finished run (expected config.json and model/); '
                            'train it first with python launch.py --config=...')
  config = load_run_config(workdir)
  config.init.primary, config.init.from_run = str(workdir / 'model'), ''
  run = train.setup_run(config, workdir)  # the heads' primary is the bundle's, digest-checked
  _, variables, _ = checkpoints.load_model_bundle(workdir / 'model')
  best = variables['heads'] if run.is_heads else variables['primary']
  results = train.evaluate(run, best, test_sets)
  out = workdir / 'results' / 'metrics.json'
  out.write_text(json.dumps(results, indent=2) + '\n')
  train.log(f'wrote {out}')
  return results


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m gta_jax.evaluate', description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--test-sets', help='comma-separated: ' + ','.join(input_pipeline.TEST_SET_SEEDS))
  args = parser.parse_args(argv)
  test_sets = tuple(args.test_sets.split(',')) if args.test_sets else None
  try:
    evaluate_run(args.workdir, test_sets)
  except (FileNotFoundError, ValueError, KeyError, input_pipeline.DatasetNotPrepared) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
