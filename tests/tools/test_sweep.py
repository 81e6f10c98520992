"""Seed sweeps: every metric aggregated as mean and sample std over the finished seeds."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from gta_jax import errors
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
  for bad in (['0', '0'], ['a'], []):
    with pytest.raises(errors.UsageError, match='--seeds'):
      sweep.parse_seeds(bad)


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
