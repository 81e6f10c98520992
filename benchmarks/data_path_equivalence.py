"""Phases II and IV trained on the host data path and on the device data path: the headline
figures of each, mean +- std over seeds, side by side.

python benchmarks/data_path_equivalence.py --host runs/sweep_quickstart --device runs/device
    [--seeds 0,1,2] [--json OUT]

Both folders hold SEED/<phase>/results/metrics.json (the layout of gta_jax.sweep): --host the
quickstart sweep (every phase on the host path), --device phases II and IV trained again with
--config.data.augment_on=device from the same seed's phase I (II) or phase III and II (IV), so
that the data path is the only difference. The commands: docs/data_path.md.

A figure is "within the spread" when the difference of the means is at most the larger of the
two standard deviations (sample std over seeds).
"""
import argparse
import json
import pathlib

import numpy as np

TEST_SETS = ('clean', 'multi', 'jpeg', 'crop')


def figures(metrics: dict, phase: str) -> dict:
  """Headline figures of one run: the detector's (phases I, II) or the heads' mean (III, IV)."""
  out = {}
  for test_set in TEST_SETS:
    if test_set not in metrics:
      continue
    result = metrics[test_set]
    if phase.startswith(('phase1', 'phase2')):
      for key in ('accuracy', 'f1', 'roc_auc'):
        out[f'{test_set} detector {key}'] = result['detection'][key]
    else:
      heads = result['heads'].values()
      for key in ('f1', 'roc_auc'):
        out[f'{test_set} heads mean {key}'] = float(np.mean([h[key] for h in heads]))
      out[f'{test_set} multiclass accuracy'] = result['multiclass']['accuracy']
  return out


def collect(root: pathlib.Path, phase: str, seeds) -> dict:
  per_seed = [figures(json.loads((root / f'seed_{s}' / phase / 'results' / 'metrics.json')
                                 .read_text()), phase) for s in seeds]
  return {key: [run[key] for run in per_seed] for key in per_seed[0]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--host', required=True, type=pathlib.Path)
  parser.add_argument('--device', required=True, type=pathlib.Path)
  parser.add_argument('--seeds', default='0,1,2', type=lambda s: s.split(','))
  parser.add_argument('--phases', default='phase2_synthetic,phase4_synthetic',
                      type=lambda s: s.split(','))
  parser.add_argument('--json')
  args = parser.parse_args()
  record, outside = {}, 0
  for phase in args.phases:
    host, device = collect(args.host, phase, args.seeds), collect(args.device, phase, args.seeds)
    print(f'\n{phase} ({len(args.seeds)} seeds)\n| figure | host | device | within spread |\n'
          '|---|---|---|---|')
    for key in host:
      h, d = np.asarray(host[key]), np.asarray(device[key])
      within = abs(h.mean() - d.mean()) <= max(h.std(ddof=1), d.std(ddof=1))
      outside += not within
      print(f'| {key} | {h.mean():.4f} +- {h.std(ddof=1):.4f} | {d.mean():.4f} +- '
            f'{d.std(ddof=1):.4f} | {"yes" if within else "no"} |')
      record[f'{phase}/{key}'] = {'host': h.tolist(), 'device': d.tolist(), 'within': bool(within)}
  print(f'\n{outside} of {len(record)} figures outside the spread')
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(record, indent=2) + '\n')


if __name__ == '__main__':
  main()
