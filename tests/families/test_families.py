"""Model families: chosen from the registry, and each refuses a config it cannot train."""
import jax
import numpy as np
import pytest

from configs import common
from gta_jax import errors
from gta_jax import families
from gta_jax.data import loader
from gta_jax.models import networks

DATASET = loader.Dataset('stand-in', None, 32, {'real': 0, 'a': 1, 'b': 2},
                       (np.zeros((), np.float32), np.ones((), np.float32)))


def _config(family, task, sources=()):
  config = common.get_config()
  config.model.family, config.task, config.sources = family, task, tuple(sources)
  return config


def test_unknown_family_and_task_mismatches_are_named():
  with pytest.raises(ValueError, match="config.model.family='resnet'.*primary, heads"):
    families.build(_config('resnet', 'detection'), DATASET)
  with pytest.raises(ValueError, match="config.task='multiclass'.*family='primary'"):
    families.build(_config('primary', 'multiclass'), DATASET)
  with pytest.raises(ValueError, match='config.sources is empty'):
    families.build(_config('heads', 'attribution'), DATASET)
  with pytest.raises(ValueError, match='exactly one source'):
    families.build(_config('gandct', 'attribution', ('a', 'b')), DATASET)
  with pytest.raises(errors.ConfigError, match="unknown source .c."):
    families.build(_config('postpool', 'multiclass', ('a', 'c')), DATASET)


@pytest.mark.parametrize('task, sources, targets', [
    ('detection', (), [0, 1, 1, 1]),
    ('attribution', ('b',), [0, 0, 1, 0]),
    ('multiclass', ('b', 'a'), [0, 2, 1, 0]),  # class index: real, b, a
])
def test_baseline_label_views_and_outputs(task, sources, targets):
  family = families.build(_config('gandct', task, sources), DATASET)
  batch = {'label': np.array([0, 1, 1, 1]), 'source_id': np.array([0, 1, 2, 7])}
  np.testing.assert_array_equal(family.targets(batch), targets)
  assert family.outputs().detection == (task != 'attribution')
  assert family.num_outputs == 1


def test_a_detector_trains_params_and_exports_them_as_the_bundle_primary():
  family = families.build(_config('primary', 'detection'), DATASET)
  variables = family.init_variables(jax.random.key(0))
  assert networks.count_parameters(variables) == 27_261
  assert family.bundle_variables(variables) == {'primary': variables}
  np.testing.assert_array_equal(family.targets({'label': np.array([1, 0])}), [1.0, 0.0])


def test_dct_heads_normalise_with_their_primarys_statistics_not_the_datasets(tmp_path):
  """Heads feed a frozen primary: its DCT input must be normalised as the primary was trained
  (its bundle's statistics), whatever data the heads train on (e.g. a folder dataset's)."""
  from gta_jax.io import checkpoints
  dataset = loader.Dataset('folder', None, 32, {'real': 0, 'a': 1, 'b': 2},
                           (np.zeros((32, 32), np.float32), np.ones((32, 32), np.float32)))
  config = _config('primary', 'detection')
  config.model.input = 'dct'
  primary = families.build(config, dataset).init_variables(jax.random.key(0))
  stats = (np.full((32, 32), 0.5, np.float32), np.full((32, 32), 2.0, np.float32))
  checkpoints.save_model_bundle(tmp_path / 'primary', checkpoints.ModelSpec('dct', 32),
                                {'primary': primary}, stats)
  heads = _config('heads', 'attribution', ('a',))
  heads.model.input, heads.init.primary = 'dct', str(tmp_path / 'primary')
  family = families.build(heads, dataset)
  constants = family.constants()
  np.testing.assert_array_equal(constants['dct_mean'], stats[0])
  np.testing.assert_array_equal(constants['dct_std'], stats[1])
  assert family.dct_stats[0].dtype == np.float32
