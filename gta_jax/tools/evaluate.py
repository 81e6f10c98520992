"""Re-run a finished run's evaluation, optionally on other test sets.

python -m gta_jax.evaluate --workdir runs/phase3_synthetic [--test-sets clean,multi,jpeg,crop,blur,noise]

Scores the run's best weights (workdir/model) with the evaluators of its config (the test split
under each fixed-seed perturbation, plus the external and cross-seed splits where the dataset has
them), the same runner training ends with, and updates workdir/results/metrics.json (test sets
not named keep their results) and results/predictions/*.npz.
"""
import argparse
import sys

from gta_jax import evaluation
from gta_jax.data import pipeline
from gta_jax.tools import cli


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m gta_jax.evaluate',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--test-sets', help='comma-separated: ' + ','.join(pipeline.TEST_SET_SEEDS))
  return parser


def run(args) -> int:
  test_sets = tuple(args.test_sets.split(',')) if args.test_sets else None
  evaluation.evaluate_run(args.workdir, test_sets)
  return cli.OK


def main(argv=None) -> int:
  return cli.run_tool(run, build_parser().parse_args(argv))


if __name__ == '__main__':
  sys.exit(main())
