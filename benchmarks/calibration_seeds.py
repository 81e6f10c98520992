"""Calibration before and after temperature scaling, over the seeds of a sweep.

python benchmarks/calibration_seeds.py runs/sweep_quickstart [--test-set clean] [--heads-mean]
    [--json out.json]

Reads every WORKDIR/seed_<s>/<phase>/results/metrics.json a `gta_jax.sweep` of the quickstart
(or any chain) left, and prints per phase and output (the detector of a detection run, each head
of a heads run) mean +- sample std over the seeds of: the temperature T fitted on validation,
test NLL and ECE as scored and after T, Brier, and TPR / FPR at the 1% and 5% operating points
chosen on validation; with --heads-mean, a heads run's heads are averaged within each seed first
(one row `heads (mean)`). A run evaluated before calibration was reported is named and left out
(`python -m gta_jax.evaluate --workdir RUN` adds it).
"""
import argparse
import json
import pathlib
import sys

import numpy as np

FIGURES = (('T', ('calibrated', 'temperature')), ('nll', ('nll',)),
           ('nll (T)', ('calibrated', 'nll')), ('ece', ('ece',)), ('ece (T)', ('calibrated', 'ece')),
           ('brier', ('brier',)), ('brier (T)', ('calibrated', 'brier')),
           ('tpr@1%', ('tpr_at_fpr_1pct', 'tpr')), ('fpr@1%', ('tpr_at_fpr_1pct', 'fpr')),
           ('tpr@5%', ('tpr_at_fpr_5pct', 'tpr')), ('fpr@5%', ('tpr_at_fpr_5pct', 'fpr')))


def _get(tree, path):
  for key in path:
    tree = tree.get(key) if isinstance(tree, dict) else None
  return tree


def collect(sweep: pathlib.Path, test_set: str, heads_mean: bool = False) -> tuple[dict, list[str]]:
  """-> ({(phase, output): {figure: [value per seed]}}, runs left out)."""
  table, left_out = {}, []
  for seed_dir in sorted(sweep.glob('seed_*')):
    for run in sorted(p for p in seed_dir.iterdir() if (p / 'results' / 'metrics.json').is_file()):
      results = json.loads((run / 'results' / 'metrics.json').read_text()).get(test_set, {})
      config = json.loads((run / 'config.json').read_text())
      outputs = ([] if config.get('sources') else [('detector', results.get('detection'))])
      outputs += list((results.get('heads') or {}).items())
      if not any(isinstance(o, dict) and 'ece' in o for _, o in outputs):
        left_out.append(str(run))
        continue
      this_seed = {}  # (phase, output) -> {figure: [values of this run]}
      for name, figures in outputs:
        key = (run.name, 'heads (mean)' if heads_mean and name != 'detector' else name)
        for label, path in FIGURES:
          value = _get(figures, path)
          if value is not None:
            this_seed.setdefault(key, {}).setdefault(label, []).append(float(value))
      for key, figures in this_seed.items():  # one value per seed: the heads' mean with --heads-mean
        entry = table.setdefault(key, {label: [] for label, _ in FIGURES})
        for label, values in figures.items():
          entry[label].append(float(np.mean(values)))
  return table, left_out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('sweep', help='a gta_jax.sweep workdir (seed_<s>/<phase>/ runs)')
  parser.add_argument('--test-set', default='clean')
  parser.add_argument('--heads-mean', action='store_true',
                      help="average a heads run's heads within each seed (one row)")
  parser.add_argument('--json', help='also write the figures here')
  args = parser.parse_args(argv)
  table, left_out = collect(pathlib.Path(args.sweep), args.test_set, args.heads_mean)
  if not table:
    print(f'no calibrated results under {args.sweep}', file=sys.stderr)
    return 1
  header = f'{"phase":<18} {"output":<13} {"n":>2}' + ''.join(f' {label:>15}' for label, _ in FIGURES)
  print(f'{args.test_set} test set, mean +- sample std over seeds')
  print(header)
  summary = {}
  for (phase, output), entry in table.items():
    n = max(len(v) for v in entry.values())
    cells = ''
    for label, _ in FIGURES:
      values = np.asarray(entry[label])
      if not len(values):
        cells += f' {"-":>15}'
        continue
      std = values.std(ddof=1) if len(values) > 1 else 0.0
      cells += f' {f"{values.mean():.3f}+-{std:.3f}":>15}'
      summary.setdefault(f'{phase}/{output}', {})[label] = {
          'mean': float(values.mean()), 'std': float(std), 'n': int(len(values)),
          'values': values.tolist()}
    print(f'{phase:<18} {output:<13} {n:>2}' + cells)
  for run in left_out:
    print(f'left out (evaluated before calibration was reported): {run}')
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(summary, indent=2) + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
