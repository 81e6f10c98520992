"""Architecture-attribution ablation: each heads recipe over several seeds on one frozen primary,
cross-tested on the generator-variant splits.

python benchmarks/architecture_ablation.py --primary runs/quickstart/phase2_synthetic \
    --workdir runs/architecture_ablation [--recipes paper,patches,contrastive,frequency,pretrained]
    [--seeds 0,1,2] [--one-seed] [--data-dir data/tfds] [--json out.json] [--smoke]

Each (recipe, seed) trains configs/architecture_attribution.py:<recipe> (recipe `dnadet`:
configs/baseline_dnadet.py, the DNA-Det baseline) with config.seed = seed into
WORKDIR/<recipe>/seed_<s> (a finished run is kept, an interrupted one resumes), then runs
`python -m gta_jax.crosstest` on it. Prints, per recipe, mean +- sample std over the seeds of:
clean and multi F1 (mean over heads, and the worst head), each variant split's mean recall, the
unseen architectures' unclaimed share, false claims on real test images, and training minutes.
Every recipe, the baseline included, trains on the config's data: five seeds per architecture
(`multiseed5`), or with --one-seed one (`default`, the paper's and DNA-Det's protocol); the JSON
records which, as the runs' configs say (`data`, `training_seeds_per_architecture`; lists when
kept runs trained on different data).
"""
import argparse
import json
import pathlib
import sys
import time

import numpy as np

import common  # benchmarks/common.py
from configs import architecture_attribution
from gta_jax import chains
from gta_jax import evaluation
from gta_jax import train
from gta_jax.data import pipeline
from gta_jax.io import run_records
from gta_jax.scoring import metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
VARIANT_ORDER = ('test_cross_seed', 'test_unseen_seeds', 'test_trained_further', 'test_finetuned',
                 'test_retrained_l2', 'test_wider')


def training_seeds_per_architecture(data_config: str) -> int:
  """How many generators per architecture make the training fakes of a built-in data config."""
  builder = pipeline.builder_class(pipeline.BUILTIN)
  return next(c.training_seeds for c in builder.BUILDER_CONFIGS if c.name == data_config)


def train_one(recipe: str, seed: int, primary: str, workdir: pathlib.Path, data_dir, smoke: bool,
              one_seed: bool = False):
  if recipe == 'dnadet':  # the DNA-Det baseline: its own network, trained from scratch
    config = chains.load_config_file(str(ROOT / 'configs' / 'baseline_dnadet.py'),
                                     'smoke' if smoke else '')
  else:
    config = chains.load_config_file(str(ROOT / 'configs' / 'architecture_attribution.py'),
                                     recipe + (',one_seed' if one_seed else '')
                                     + (',smoke' if smoke else ''))
  with config.unlocked():
    config.seed = seed
    if recipe != 'dnadet':
      config.init.primary = primary
    elif not one_seed:  # the baseline sees what the recipes see
      config.data.config = architecture_attribution.several_seeds_data(smoke)
    if data_dir:
      config.data.data_dir = data_dir
  started = time.time()
  fresh = not (workdir / 'results' / 'metrics.json').is_file()
  results = train.train_and_evaluate(config, workdir)
  minutes = (time.time() - started) / 60 if fresh else None
  return results, minutes


def figures(results: dict, cross: dict) -> dict:
  """One run's headline figures (flat name -> number)."""
  out = {}
  out['clean multiclass accuracy'] = results['clean']['multiclass']['accuracy']
  for mode in ('clean', 'multi'):
    if mode not in results:  # smoke configs test clean and jpeg only
      continue
    f1 = [head['f1'] for head in results[mode]['heads'].values()]
    out[f'{mode} F1 (mean of heads)'] = float(np.mean(f1))
    out[f'{mode} F1 (worst head)'] = float(np.min(f1))
  for split in VARIANT_ORDER:
    if split in cross:
      out[f'{split} recall'] = cross[split]['mean_recall']
      out[f'{split} worst head'] = min(cross[split]['recall'].values())
  if 'test_unseen_architectures' in cross:
    out['unseen architectures unclaimed'] = cross['test_unseen_architectures']['unclaimed']
  out['false claims on real'] = cross['real']['false_claims']
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--primary', required=True, help='a phase-II run (the frozen primary)')
  parser.add_argument('--workdir', default='runs/architecture_ablation')
  parser.add_argument('--recipes', default="paper,patches,contrastive,frequency,pretrained,dnadet")
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--one-seed', action='store_true',
                      help='train on one seed per architecture (`default` data), not five')
  parser.add_argument('--data-dir')
  parser.add_argument('--json')
  parser.add_argument('--smoke', action='store_true', help='smoke configs (tests)')
  args = parser.parse_args(argv)
  workdir = pathlib.Path(args.workdir)
  recipes, seeds = args.recipes.split(','), [int(s) for s in args.seeds.split(',')]
  per_recipe, trained_on = {}, set()
  for recipe in recipes:
    runs = {}
    for seed in seeds:
      run_dir = workdir / recipe / f'seed_{seed}'
      results, minutes = train_one(recipe, seed, args.primary, run_dir, args.data_dir, args.smoke,
                                   args.one_seed)
      cross = evaluation.crosstest_run(run_dir, args.data_dir)
      trained_on.add(run_records.load_run_config(run_dir).data.config)
      runs[seed] = figures(results, cross) | ({'training minutes': minutes} if minutes else {})
    names = list(dict.fromkeys(name for run in runs.values() for name in run))
    values = {name: [run[name] for run in runs.values() if run.get(name) is not None]
              for name in names}
    per_recipe[recipe] = {'per_seed': runs,
                          'summary': {name: metrics.mean_and_spread(v)
                                      for name, v in values.items() if v}}
  rows = list(dict.fromkeys(n for r in per_recipe.values() for n in r['summary']))
  print('| figure (mean +- std over seeds ' + ', '.join(map(str, seeds)) + ') | '
        + ' | '.join(recipes) + ' |')
  print('|---' * (len(recipes) + 1) + '|')
  for name in rows:
    cells = []
    for recipe in recipes:
      entry = per_recipe[recipe]['summary'].get(name)
      cells.append(f'{entry["mean"]:.3f} +- {entry["std"]:.3f}' if entry else '-')
    print(f'| {name} | ' + ' | '.join(cells) + ' |')
  # The data as the runs' own configs record it (a kept run may predate today's default).
  data = sorted(trained_on)
  per_data = [training_seeds_per_architecture(d) for d in data]
  record = {'machine': common.machine(), 'primary': args.primary, 'seeds': seeds,
            'data': data[0] if len(data) == 1 else data,
            'training_seeds_per_architecture': per_data[0] if len(data) == 1 else per_data,
            'recipes': per_recipe}
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(record, indent=2) + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
