"""Attribution across generator variants: does each head know its architecture, or only the weights
it was trained against?

python -m gta_jax.crosstest --workdir RUN [--json OUT] [--data-dir DIR]

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
import json
import pathlib
import sys

import ml_collections
import numpy as np

from gta_jax import errors
from gta_jax import evaluate
from gta_jax import input_pipeline
from gta_jax import train
from gta_jax.writers import log


def variants_config(name: str, config: str) -> str:
  """The dataset config holding `config`'s images plus the variant splits (itself if none)."""
  return getattr(input_pipeline.builder_class(name), 'VARIANT_CONFIGS', {}).get(config, config)


def crosstest_run(workdir, data_dir=None) -> dict:
  """A finished run -> {split: metrics} (see the module docstring), also written to its results."""
  workdir = pathlib.Path(workdir)

  def adjust(config):
    if data_dir:
      config.data.data_dir = str(data_dir)
    config.data.config = variants_config(config.data.name, config.data.config)
    config.evals = ml_collections.ConfigDict({'crosstest': {'type': 'variant_splits'}})

  config, family, trained = evaluate.load_finished_run(workdir, adjust)
  if not family.outputs().head_names:
    raise errors.ConfigError(f'{workdir} is a detection run; crosstest scores attribution runs '
                             '(phase III/IV heads or a multiclass baseline).')
  results = train.evaluate(config, family, trained).get('crosstest', {})
  if len(results) <= 1:  # only the real images: nothing to cross-test on
    raise errors.ConfigError(
        f'{config.data.name}/{config.data.config} has no generator-variant test splits (test_* '
        'besides test and test_external); the built-in data has them in its `variants` config.')
  for split, entry in results.items():
    if split != 'real':
      entry['mean_recall'] = (float(np.mean(list(entry['recall'].values())))
                              if entry.get('recall') else None)
  out = workdir / 'results' / 'crosstest.json'
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=2) + '\n')
  log(f'wrote {out}')
  return results


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


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m gta_jax.crosstest',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True, help='a finished attribution run')
  parser.add_argument('--data-dir', help='where the run\'s dataset is prepared, if moved')
  parser.add_argument('--json', help='also write the results here')
  args = parser.parse_args(argv)
  try:
    results = crosstest_run(args.workdir, args.data_dir)
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(format_table(results))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
