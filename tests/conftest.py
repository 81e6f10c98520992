"""Shared test set-up: the reference release files are optional (a user's clone has no ../shared)."""
import atexit
import os
import pathlib
import shutil
import sys
import tempfile

import pytest

# One XLA compilation cache for the session, empty at its start and shared with the subprocesses
# the tests launch (they inherit the environment). Most tests build fresh jitted steps of the same
# smoke shapes, and a fresh process compiles the random initialisers op by op (~15 s for the
# primary on 2 cores, ~2 s from the cache): reusing compiled programs by their HLO fingerprint
# changes no result, only the suite's time. Set before JAX is imported; a user's own
# JAX_COMPILATION_CACHE_DIR is left alone.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix='gta_jax_test_xla_cache_')
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ.update({'JAX_COMPILATION_CACHE_DIR': _CACHE,
                     'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
                     'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'})

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'tests'))
SHARED = pathlib.Path(os.environ.get('GTA_JAX_SHARED', ROOT.parent / 'shared'))
RELEASE_WEIGHTS = SHARED / 'reference' / 'keras_weights'
RELEASE_STATS = SHARED / 'reference' / 'dct_stats'

requires_release = pytest.mark.skipif(
    not RELEASE_WEIGHTS.is_dir(),
    reason='release .h5 models not present (set GTA_JAX_SHARED to the folder holding reference/)')


@pytest.fixture(scope='session')
def smoke_data_dir(tmp_path_factory):
  """The built-in dataset's smoke config, generated once per test session (~30 s)."""
  from gta_jax import input_pipeline
  data_dir = tmp_path_factory.mktemp('tfds')
  input_pipeline.load_builder(input_pipeline.BUILTIN, 'smoke', str(data_dir))
  return str(data_dir)


@pytest.fixture(scope='session')
def smoke_primary(smoke_data_dir, tmp_path_factory):
  """A phase-I smoke primary on the smoke data, trained once per session (heads recipes read it)."""
  from gta_jax import chains, train
  workdir = tmp_path_factory.mktemp('primary')
  config = chains.load_config_file(str(ROOT / 'configs' / 'phase1_synthetic.py'), 'smoke')
  with config.unlocked():
    config.data.data_dir = smoke_data_dir
  train.train_and_evaluate(config, workdir)
  return workdir


def recipe_config(smoke_data_dir, primary, recipe: str, **overrides):
  """configs/architecture_attribution.py:<recipe>,smoke on the smoke data and `primary`, with
  dotted-key overrides (e.g. **{'recipe.patches': 2})."""
  from ml_collections.config_flags import config_path

  from gta_jax import chains
  config = chains.load_config_file(str(ROOT / 'configs' / 'architecture_attribution.py'),
                                   f'{recipe},smoke')
  with config.unlocked():
    config.data.data_dir = smoke_data_dir
    config.init.primary = str(primary)
    for key, value in overrides.items():
      config_path.set_value(key, config, value)
  return config
