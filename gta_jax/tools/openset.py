"""Unknown generators: fit a heads run's open-set calibration and score it on the protocols.

python -m gta_jax.openset --workdir RUN [--fit] [--score max_logit] [--json OUT [--overwrite]]

The scores, calibrations and protocols are described in gta_jax/scoring/openset.py and
gta_jax/evaluators/open_set.py. Each run's figures go to RUN/results/openset.json, a folder's to
FOLDER/openset.json (and OUT with --json).
"""
import argparse
import pathlib
import sys

from gta_jax import errors
from gta_jax.evaluators.open_set import aggregate
from gta_jax.evaluators.open_set import heads_runs_under
from gta_jax.evaluators.open_set import protocols
from gta_jax.evaluators.open_set import summary
from gta_jax.io import outputs
from gta_jax.io.writers import log
from gta_jax.scoring.openset import describe
from gta_jax.scoring.openset import KNN_ACCEPTANCE
from gta_jax.scoring.openset import SCORES
from gta_jax.scoring.openset_fit import fit
from gta_jax.scoring.openset_fit import HeadsRun
from gta_jax.tools import cli

TOOL = 'openset'


def format_table(results: dict) -> str:
  columns = {'auroc': 'AUROC', 'oscr': 'OSCR', 'tnr_at_tpr95': 'TNR at TPR 95%',
             'closed_set_accuracy': 'closed-set acc. at 0.5',
             'closed_set_accuracy_knn': 'closed-set acc. kNN', 'unknown_flagged_knn': 'unknowns kNN'}
  width = max([24] + [len(p) + 2 for p in results])
  lines = [f'{"protocol":<{width}}' + ''.join(f'{c:>24}' for c in columns.values())]
  for protocol, entry in results.items():
    cells = []
    for column in columns:
      value = entry.get(column)
      if isinstance(value, dict):
        cells.append(f'{value["mean"]:.3f} +- {value["std"]:.3f} (n={value["n"]})')
      else:
        cells.append('-' if value is None else f'{value:.3f}')
    lines.append(f'{protocol:<{width}}' + ''.join(f'{c:>24}' for c in cells))
  return '\n'.join(lines)


def _write_json(path: pathlib.Path, results: dict) -> None:
  cli.write_json(path, results)
  log(f'wrote {path}')


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m gta_jax.openset',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True,
                      help='a heads run (phase III/IV), or a folder of heads runs (folds)')
  parser.add_argument('--score', choices=SCORES, default='max_logit',
                      help='the score of the top-level figures (every score is in by_score)')
  parser.add_argument('--fit', action='store_true',
                      help='(re)fit the thresholds on the validation split and store them')
  parser.add_argument('--knn-acceptance', type=float,
                      help=f'with --fit: the share of known validation fakes the kNN calibration '
                           f'keeps (default {KNN_ACCEPTANCE}: it costs about 0.01-0.02 of '
                           f'closed-set accuracy; lower flags more unknowns, as the protocols\' '
                           f'closed_set_accuracy_knnA / unknown_flagged_knnA show)')
  parser.add_argument('--data-dir', help='where the run\'s dataset is prepared, if moved')
  parser.add_argument('--variants', action='store_true',
                      help='also score the unseen architectures of the dataset\'s generator-'
                           'variant counterpart (protocol unseen_variant_architecture; the '
                           'built-in data builds it on first use, ~11 min)')
  parser.add_argument('--json', help='also write {protocol: metrics} here (for several runs: '
                                     'means, with spread and runs; see summary); a new file, '
                                     'or one openset wrote')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace a --json file that openset did not write (never one inside '
                           'the runs read)')
  return parser


def run(args) -> int:
  workdir = pathlib.Path(args.workdir)
  if args.json:  # never inside the runs read: their results/ are written there
    outputs.check_file(args.json, tool=TOOL, overwrite=args.overwrite, read=[workdir])
  if args.knn_acceptance is not None and not args.fit:
    raise errors.ConfigError('--knn-acceptance sets where the kNN calibration is fitted: add '
                             '--fit.')
  knn_acceptance = KNN_ACCEPTANCE if args.knn_acceptance is None else args.knn_acceptance
  runs = heads_runs_under(workdir)
  if not runs:
    raise errors.MissingRunError(f'{workdir} holds no finished heads run (no model/model.json '
                                 'there or one level below).')
  per_run = {}
  for run_dir in runs:
    heads_run = HeadsRun.open(run_dir, args.data_dir, args.variants)
    if args.fit or not heads_run.spec.open_set:
      log(f'{run_dir}: {describe(fit(heads_run, knn_acceptance), heads_run.spec.head_names)}')
    if args.score == 'doc' and 'doc' not in (heads_run.spec.open_set or {}):
      raise errors.ConfigError(f'{run_dir}: no DOC thresholds; run with --fit.')
    per_run[str(run_dir)] = protocols(heads_run, args.score)
  for run_dir, results in per_run.items():
    print(f'\n{run_dir} (score: {args.score})')
    print(format_table(results) if results else '  no unknown images in this run\'s data')
    _write_json(pathlib.Path(run_dir) / 'results' / 'openset.json', results)
  output = summary(per_run)
  if len(per_run) > 1:
    print(f'\nmean and spread over {len(per_run)} runs (score: {args.score})')
    print(format_table(aggregate(per_run)))
  if runs != [workdir]:  # a folder of runs (folds) keeps its summary too
    _write_json(workdir / 'openset.json', output)
  if args.json:
    cli.write_json(args.json, output, TOOL)
    log(f'wrote {args.json}')
  return cli.OK


def main(argv=None) -> int:
  return cli.run_tool(run, build_parser().parse_args(argv))


if __name__ == '__main__':
  sys.exit(main())
