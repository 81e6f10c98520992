"""Attribution across generator variants: does each head know its architecture, or only the weights
it was trained against?

python -m gta_jax.crosstest --workdir RUN [--json OUT [--overwrite]] [--data-dir DIR]

Scores a finished attribution run (heads, or a multiclass baseline) on every generator-variant
split of its dataset (gta_jax/evaluators/variant_splits.py says what is measured). A run trained on
the built-in data's `default` (or `smoke`) config is scored on its `variants` (`smoke_variants`)
counterpart, which holds the very same training and test images plus the variant splits; it is
built on first use (~11 minutes on 2 cores, once). Prints a table and writes
RUN/results/crosstest.json (and OUT with --json):
  {split: {"count", "recall": {architecture: r}, "mean_recall", "unclaimed", "called_fake",
           "accuracy", "classes", "confusion_matrix"}, "real": {"count", "false_claims", "by_head"}}
"""
import argparse
import sys

from gta_jax import evaluation
from gta_jax.io import outputs
from gta_jax.tools import cli

TOOL = 'crosstest'


def _figure(value) -> str:
  return '-' if value is None else f'{value:.3f}'


def format_table(results: dict) -> str:
  """One row per variant split: count, each architecture's recall, their mean, unclaimed share,
  multiclass accuracy; then the false claims on real test images."""
  splits = [s for s in results if s != 'real']
  architectures = list(dict.fromkeys(a for s in splits for a in results[s].get('recall', {})))
  header = (['split', 'count'] + [f'recall {a}' for a in architectures]
            + ['mean recall', 'unclaimed', 'accuracy'])
  rows = [header]
  for split in splits:
    entry = results[split]
    rows.append([split, str(entry['count'])]
                + [_figure(entry.get('recall', {}).get(a)) for a in architectures]
                + [_figure(entry.get('mean_recall')), _figure(entry['unclaimed']),
                   _figure(entry['accuracy'])])
  widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
  lines = ['  '.join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
  real = results.get('real', {})
  if real:
    lines.append(f'false claims on {real["count"]} real test images: '
                 f'{_figure(real["false_claims"])} ('
                 + ', '.join(f'{h} {_figure(v)}' for h, v in real['by_head'].items()) + ')')
  return '\n'.join(lines)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m gta_jax.crosstest',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='a finished attribution run')
  parser.add_argument('--data-dir', help='where the run\'s dataset is prepared, if moved')
  parser.add_argument('--json', help='also write the results here (a new file, or one crosstest '
                      'wrote)')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace a --json file that crosstest did not write (never one inside '
                           'the run)')
  return parser


def run(args) -> int:
  if args.json:  # never inside the run: its results/ are written there
    outputs.check_file(args.json, tool=TOOL, overwrite=args.overwrite, read=[args.workdir])
  results = evaluation.crosstest_run(args.workdir, args.data_dir)
  print(format_table(results))
  if args.json:
    cli.write_json(args.json, results, TOOL)
  return cli.OK


def main(argv=None) -> int:
  return cli.run_tool(run, build_parser().parse_args(argv))


if __name__ == '__main__':
  sys.exit(main())
