"""Seed sweeps: every metric aggregated as mean and sample std over the finished seeds."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from gta_jax import chains
from gta_jax import errors
from gta_jax import run_config
from gta_jax.tools import sweep


def test_every_finite_number_is_aggregated_over_the_seeds_that_have_it():
  def results(a, auc, curve):
    return {'clean': {'heads': {'a': {'f1': a}, 'b': {'f1': 0.5}}, 'roc_auc': auc, 'name': 'x',
                      'curve': curve},
            'multi': {'by_perturbation': {'with_blur': {'heads': {'a': {'f1': a / 2}}}}}}
  summary = sweep.aggregate({'0': results(0.9, 0.8, [1, 2]), '1': results(0.7, None, [3, 4]),
                             '2': results(0.8, float('nan'), [5, 6])})
  assert summary['clean/heads/a/f1']['mean'] == pytest.approx(0.8)
  assert summary['clean/heads/a/f1']['std'] == pytest.approx(np.std([0.9, 0.7, 0.8], ddof=1))
  assert summary['clean/heads/b/f1']['std'] == 0.0
  assert summary['clean/roc_auc'] == {'mean': 0.8, 'std': 0.0, 'n': 1, 'values': {'0': 0.8}}
  assert summary['clean/curve/1']['mean'] == pytest.approx(4.0)
  assert not any('name' in path for path in summary)
  table = sweep.format_table(summary)
  assert 'clean/heads/a/f1' in table and '0.800 +- 0.100 (3)' in table
  assert 'curve' not in table  # every leaf is in summary.json; the table shows the headline ones
  assert summary['multi/by_perturbation/with_blur/heads/a/f1']['mean'] == pytest.approx(0.4)
  assert 'by_perturbation' not in table


def test_seeds_must_be_distinct_whole_numbers():
  assert sweep.parse_seeds(['0', '5']) == [0, 5]
  for bad in (['0', '0'], ['a'], [], ['-1']):  # a negative seed crashed in numpy's generator
    with pytest.raises(errors.UsageError, match='--seeds'):
      sweep.parse_seeds(bad)
  config = chains.load_config_file(str(ROOT / 'configs' / 'phase1_synthetic.py'))
  with config.unlocked():
    config.seed = -3
  with pytest.raises(errors.ConfigError, match='config.seed=-3: must be a whole number >= 0'):
    run_config.check(config)


def _finished(run_dir, seed, **settings):
  """A finished run's records as training leaves them (config.json, results/metrics.json)."""
  config = {'seed': seed, 'optim': {'learning_rate': 0.001, 'batch_size': 32},
            'data': {'data_dir': f'/data/{seed}'}, 'init': {'primary': f'{run_dir}/../p1'}}
  for key, value in settings.items():
    section, field = key.split('.')
    config[section][field] = value
  (run_dir / 'results').mkdir(parents=True)
  (run_dir / 'config.json').write_text(json.dumps(config))
  (run_dir / 'results' / 'metrics.json').write_text(json.dumps({'clean': {'accuracy': 0.5}}))


def test_only_seeds_of_one_config_are_aggregated(tmp_path):
  """Was: seeds trained with other settings were averaged as one config."""
  for seed in (0, 1):  # seed, data folder and lineage may differ; the settings may not
    _finished(tmp_path / f'seed_{seed}', seed)
  assert set(sweep.finished_results(tmp_path)) == {'0', '1'}
  _finished(tmp_path / 'seed_2', 2, **{'optim.learning_rate': 0.01})
  with pytest.raises(errors.ConfigError, match=r"seed_2 was trained with other settings than "
                     r"seed_0 \(config.optim.learning_rate: 0.001 in seed_0, 0.01 in seed_2\)"):
    sweep.finished_results(tmp_path)
  # A field added to the configs since seed_0 trained (seed_0 kept its default): no difference.
  newer = json.loads((tmp_path / 'seed_0' / 'config.json').read_text())
  (tmp_path / 'seed_2' / 'config.json').write_text(json.dumps(
      {**newer, 'seed': 2, 'recipe': {'patches': 0}}))
  assert set(sweep.finished_results(tmp_path)) == {'0', '1', '2'}
  for seed in (0, 1):  # a chain: each phase compared with its own
    _finished(tmp_path / 'chain' / f'seed_{seed}' / 'phase1', seed,
              **{'optim.batch_size': 32 if seed == 0 else 64})
  with pytest.raises(errors.ConfigError, match=r'seed_1 \(phase1\).*optim.batch_size'):
    sweep.finished_results(tmp_path / 'chain')


@pytest.mark.slow
def test_a_smoke_sweep_runs_each_seed_and_summarizes(smoke_data_dir, tmp_path):
  workdir = tmp_path / 'sweep'
  command = [sys.executable, '-m', 'gta_jax.sweep',
             f'--config={ROOT}/configs/phase1_synthetic.py:smoke', '--seeds=3,4',
             f'--workdir={workdir}', f'--config.data.data_dir={smoke_data_dir}']
  result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-2000:]
  summary = json.loads((workdir / 'summary.json').read_text())
  runs = {seed: json.loads((workdir / f'seed_{seed}' / 'results' / 'metrics.json').read_text())
          for seed in (3, 4)}
  configs = [json.loads((workdir / f'seed_{s}' / 'config.json').read_text()) for s in (3, 4)]
  assert [c['seed'] for c in configs] == [3, 4]
  leaves = {s: dict(sweep.numeric_leaves(r)) for s, r in runs.items()}
  path = next(p for p in leaves[3] if p.endswith('accuracy'))
  assert summary[path]['values'] == {'3': leaves[3][path], '4': leaves[4][path]}
  assert summary[path]['mean'] == pytest.approx((leaves[3][path] + leaves[4][path]) / 2)
  # Run again: finished seeds are skipped, and --summarize alone rebuilds the table.
  again = subprocess.run([sys.executable, '-m', 'gta_jax.sweep', f'--workdir={workdir}',
                          '--summarize'], capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert again.returncode == 0 and '2 seed(s): 3, 4' in again.stdout
  # Each run recorded the build it trained on; both seeds share one, so no warning.
  records = json.loads((workdir / 'provenance.json').read_text())
  assert set(records['runs']) == {'seed_3', 'seed_4'} and records['warning'] is None
  digests = {r['dataset']['sha256'] for r in records['runs'].values()}
  assert len(digests) == 1 and 'warning' not in again.stdout
  # A seed trained on another build is named.
  record_file = workdir / 'seed_4' / 'provenance.json'
  other = json.loads(record_file.read_text())
  other['dataset']['sha256'] = 'f' * 64
  record_file.write_text(json.dumps(other))
  mixed = subprocess.run([sys.executable, '-m', 'gta_jax.sweep', f'--workdir={workdir}',
                          '--summarize'], capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert mixed.returncode == 0 and 'warning: these runs trained on 2 different builds' in mixed.stdout
  assert 'ffffffffffff: seed_4' in mixed.stdout
