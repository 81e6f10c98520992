"""Shared test set-up: the two tiers, one XLA cache, the smoke dataset and primary, and the
reference release files (optional: a user's clone has no ../shared).

Two tiers. `pytest` runs the fast tier; `pytest -m ""` the full suite (what CI runs). A test is in
the slow tier when it is marked `slow` or uses a fixture that trains (SLOW_FIXTURES); that is
checked, not trusted: in the fast tier, a test that trains, starts a Python process or builds a
dataset variant fails and says to mark it. The one exception is the end-to-end smoke run, marked
`smoke`, which the fast tier keeps.
"""
import atexit
import fcntl
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Caches kept between test sessions, so the fast tier a developer runs before every commit does
# not recompile or regenerate what it did last time: XLA's compiled programs (keyed by the HLO and
# the compile options, so the fast tier's unoptimised programs never serve the full suite) and
# the smoke dataset (keyed by a digest of the builders' sources and the XLA optimisation setting,
# so a change to the generation builds it anew). GTA_JAX_TEST_CACHE names the folder (default ~/.cache/gta_jax_tests); set it
# to an empty string for a cold run in temporary folders. A user's own JAX_COMPILATION_CACHE_DIR
# is left alone. Reusing compiled programs or a deterministic dataset changes no result.
_cache = os.environ.get('GTA_JAX_TEST_CACHE', str(pathlib.Path.home() / '.cache' / 'gta_jax_tests'))
if not _cache:
  _cache = tempfile.mkdtemp(prefix='gta_jax_test_cache_')
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
TEST_CACHE = pathlib.Path(_cache)
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ.update({'JAX_COMPILATION_CACHE_DIR': str(TEST_CACHE / 'xla'),
                     'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
                     'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'})

# Test helpers (keras_reference, sharded_checks) and the benchmark scripts import as modules.
# The package itself is installed (pip install -e .), so it needs no path.
sys.path.insert(0, str(ROOT / 'tests'))
sys.path.insert(0, str(ROOT / 'benchmarks'))
SHARED = pathlib.Path(os.environ.get('GTA_JAX_SHARED', ROOT.parent / 'shared'))
RELEASE_WEIGHTS = SHARED / 'reference' / 'keras_weights'
RELEASE_STATS = SHARED / 'reference' / 'dct_stats'

requires_release = pytest.mark.skipif(
    not RELEASE_WEIGHTS.is_dir(),
    reason='release .h5 models not present (set GTA_JAX_SHARED to the folder holding reference/)')


def _builder_sources_digest() -> str:
  sources = sorted((ROOT / 'datasets').rglob('*.py')) + [ROOT / 'gta_jax' / 'data' / 'images.py',
                                                           ROOT / 'gta_jax' / 'data' / 'augment.py']
  digest = hashlib.sha256()
  # The generators train under XLA: the fast tier's unoptimised programs round differently, so
  # their data is kept apart from the full suite's (whose variants are built beside it).
  optimised = not os.environ.get('JAX_DISABLE_MOST_OPTIMIZATIONS')
  digest.update(f'xla optimisations {"on" if optimised else "off"}\n'.encode())
  for path in sources:
    digest.update(path.read_bytes())
  return digest.hexdigest()[:16]


@pytest.fixture(scope='session')
def smoke_data_dir(tmp_path_factory):
  """The built-in dataset's smoke config (~40 s to generate on 2 cores), copied from the test
  cache when a session with the same builder sources made it; variants that tests build go into
  this session's copy only."""
  from gta_jax.data import pipeline
  data_dir = tmp_path_factory.mktemp('tfds')
  cached = TEST_CACHE / 'tfds' / _builder_sources_digest()
  with open(_lock_path(), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # parallel sessions (pytest -n) build it once
    if not (cached / '.complete').is_file():
      shutil.rmtree(cached, ignore_errors=True)
      pipeline.load_builder(pipeline.BUILTIN, 'smoke', str(cached))
      (cached / '.complete').touch()
  shutil.copytree(cached, data_dir, dirs_exist_ok=True)
  pipeline.load_builder(pipeline.BUILTIN, 'smoke', str(data_dir))  # prepared: opens it
  return str(data_dir)


def _lock_path() -> pathlib.Path:
  TEST_CACHE.mkdir(parents=True, exist_ok=True)
  return TEST_CACHE / 'tfds.lock'


@pytest.fixture(scope='session')
def smoke_primary(smoke_data_dir, tmp_path_factory):
  """A phase-I smoke primary on the smoke data, trained once per session (heads recipes read it)."""
  from gta_jax import chains
  from gta_jax import train
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


# -------------------------------------------------------------------------------------- tiers

# Fixtures that train a model: a test that uses one is in the slow tier.
SLOW_FIXTURES = frozenset({'smoke_primary', 'quickstart', 'straight_phase1', 'reference_run',
                           'dummy_data_dir'})


def pytest_configure(config):
  config.addinivalue_line('markers', 'smoke: the end-to-end smoke run the fast tier keeps')
  # The fast tier compiles with XLA's optimisations off (as the Flax examples' tests do): its tests
  # check formulations and behaviour on tiny shapes, where compiling dominates (2.3x faster for
  # the model and convolution tests on 2 cores). The full suite compiles as a user's run does.
  # Set before JAX is imported (the test modules import it after this hook).
  if config.option.markexpr == 'not slow':
    os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', 'true')


def pytest_collection_modifyitems(config, items):
  for item in items:
    if 'smoke' not in item.keywords and SLOW_FIXTURES & set(item.fixturenames):
      item.add_marker(pytest.mark.slow)


class _SlowWork(AssertionError):
  pass


@pytest.fixture(autouse=True)
def _fast_tier_guard(request, monkeypatch):
  """In the fast tier: training, a Python subprocess or a dataset variant's build fails the test
  with the fix (mark it slow), so the fast tier stays fast by construction."""
  if 'slow' in request.keywords or 'smoke' in request.keywords:
    yield
    return
  from gta_jax.data import pipeline
  from gta_jax.families import base

  def refuse(what):
    raise _SlowWork(f'{request.node.nodeid} {what}: mark it @pytest.mark.slow (full suite only).')

  def guarded_process(original):
    def start(args, *a, **k):
      command = args if isinstance(args, (list, tuple)) else [args]
      if command and str(command[0]) == sys.executable:
        refuse('starts a Python process')
      return original(args, *a, **k)
    return start

  def guarded_builder(original):
    def load(name, config, *a, **k):
      if name == pipeline.BUILTIN and config != 'smoke':
        refuse(f'builds the built-in data\'s {config!r} config')
      return original(name, config, *a, **k)
    return load

  # Every training starts its state here, after the config checks and the set-up that tests of
  # refusals exercise: those stay in the fast tier.
  monkeypatch.setattr(base.Family, 'init_state', lambda *a, **k: refuse('trains a model'))
  monkeypatch.setattr(subprocess, 'run', guarded_process(subprocess.run))
  monkeypatch.setattr(subprocess, 'Popen', guarded_process(subprocess.Popen))
  monkeypatch.setattr(pipeline, 'load_builder', guarded_builder(pipeline.load_builder))
  yield
