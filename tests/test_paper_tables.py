"""Every config of the paper-table plan (configs/paper_tables.py, which docs/paper_tables.md
presents) runs in :smoke on the GANFP and FacesHQ+ builders' dummy data, in the order given, each
phase on the run before it (found by name beside it), and every table's `report` renders."""

import pytest

from conftest import ROOT
from gta_jax import chains
from gta_jax import train
from gta_jax.tools import prepare
from gta_jax.tools import report


def _tables():
  """configs/paper_tables.py -> [(table, [config 'path[:variant]'], [report run dirs])]."""
  from configs import paper_tables
  return [(t.name, list(t.configs), list(t.runs)) for t in paper_tables.TABLES]


TABLES = _tables()


def test_the_plan_names_configs_for_every_table():
  assert [t for t, _, _ in TABLES][:8] == ['1a detection, GANFP pixel', '1b detection, GANFP DCT',
                                           '1c detection, FacesHQ+', '2a attribution, GANFP pixel',
                                           '2b attribution, GANFP DCT', '2c attribution, FacesHQ+',
                                           '3a-c heads on the jpeg / crop primaries',
                                           '4 multiclass, GANFP']
  for _, configs, runs in TABLES:
    assert len(runs) == len(configs) > 0


@pytest.fixture(scope='module')
def dummy_data_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tfds')
  for dataset in ('ganfp', 'faceshq_plus'):
    assert prepare.main(['--dataset', dataset, '--manual-dir',
                         str(ROOT / 'datasets' / dataset / 'dummy_data'), '--config', '2-1-1',
                         '--data-dir', str(data_dir)]) == 0
  return str(data_dir)


def _smoke(reference: str, data_dir: str):
  path, _, arg = reference.partition(':')
  config = chains.load_config_file(str(ROOT / path), ','.join(filter(None, [arg, 'smoke'])))
  with config.unlocked():
    config.data.data_dir = data_dir
    config.optim.max_epochs = 1           # one epoch shows the wiring; the rest is the same code
    config.evals.test.modes = ('clean',)
    config.model.conv_impl = 'lax'        # compiles faster; tests/models/test_convolution.py checks equality
  return config


def test_every_table_config_runs_in_order_and_every_report_renders(dummy_data_dir, tmp_path):
  root = tmp_path / 'runs'
  for table, configs, runs in TABLES:
    for reference, run in zip(configs, runs):
      config = _smoke(reference, dummy_data_dir)
      assert config.name == run[len('runs/'):], (table, reference)
      results = train.train_and_evaluate(config, root / config.name)
      assert results['clean'], (table, reference)
    out = tmp_path / 'tables' / table.split()[0]
    assert report.main([str(root / r[len('runs/'):]) for r in runs] +
                       ['--out', str(out), '--no-cams']) == 0
    assert list(out.glob('*.md')), table
