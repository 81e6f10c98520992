"""Config chains (the quickstart): run several phase configs in order, each wired to the previous
one's run, then leave a few example test images to try `attribute` on."""
import importlib.util
import pathlib

import ml_collections
from ml_collections.config_flags import config_path
from PIL import Image

from gta_jax import errors
from gta_jax.data import loader
from gta_jax.io.writers import log

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_module(path: str):
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config_file(path: str, arg: str = '') -> ml_collections.ConfigDict:
  """Loads `get_config(arg)` from a config file path, as config_flags does."""
  return _load_module(path).get_config(arg)


# What a chain passes on to each of its phases; any other override of a chain's config would be
# silently lost, so it is refused.
FORWARDED = ('seed', 'data.name', 'data.config', 'data.data_dir', 'data.release_blur_sigma',
             'data.noise_variance', 'data.augment_on', 'data.device_cache_gb', 'data.workers',
             'model.conv_impl')


def flat_items(tree, prefix=''):
  """{'a': {'b': 1}} -> ('a.b', 1), ...: a config's fields by dotted key."""
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from flat_items(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value


def check_chain_overrides(config) -> None:
  """Refuses a chain config that differs from the base config (with ':smoke' where it applies) in
  a field the chain does not pass on."""
  reference = load_config_file(str(ROOT / 'configs' / 'common.py'))
  if config.data.config == 'smoke':
    reference = _smoke_of(reference)
  ours, base = dict(flat_items(config.to_dict())), dict(flat_items(reference.to_dict()))
  lost = sorted(k for k in ours if k not in FORWARDED + ('name', 'chain')
                and ours[k] != base.get(k))
  if lost:
    raise errors.ConfigError(
        f'config.{lost[0]}={ours[lost[0]]!r}: a chain passes on only '
        f'{", ".join(FORWARDED)} to its phases, so {", ".join(lost)} would be lost. Run the '
        f'phases one by one instead ({", ".join(config.chain)}).')


def _smoke_of(config):
  """The ':smoke' variant of a base config (configs/common.py's smoke)."""
  module = _load_module(str(ROOT / 'configs' / 'common.py'))
  with config.unlocked():
    return module.smoke(config)


def run_chain(config, workdir: pathlib.Path, train_and_evaluate) -> dict:
  """Runs each config of `config.chain` with `train_and_evaluate(phase_config, phase_workdir)`,
  passing on FORWARDED fields. Each phase runs in workdir/<its name>, so the earlier runs its
  lineage names (init.from_run / init.primary, run names) resolve to the chain's own runs."""
  check_chain_overrides(config)
  arg = 'smoke' if config.data.config == 'smoke' else ''
  results = {}
  for path in config.chain:
    phase = load_config_file(str(ROOT / path), arg)
    with phase.unlocked():
      for key in FORWARDED:
        config_path.set_value(key, phase, config_path.get_value(key, config))
    log(f'--- {phase.name} -> {workdir / phase.name}')
    results[phase.name] = train_and_evaluate(phase, workdir / phase.name)
  write_examples(config, workdir / 'examples')
  return results


def write_examples(config, directory: pathlib.Path, per_source: int = 2) -> None:
  """A few test images per source as PNG files, to try `python -m gta_jax.attribute` on."""
  if directory.is_dir():
    return
  dataset = loader.open_dataset(config.data, config.model.input)
  directory.mkdir(parents=True)
  for split in ('test', 'test_external'):
    if not dataset.has_split(split):
      continue
    source = dataset.source(split)
    written: dict[str, int] = {}
    for index in range(len(source)):
      record = source[index]
      name = record['source'].decode() if isinstance(record['source'], bytes) else record['source']
      if written.get(name, 0) < per_source:
        Image.fromarray(record['image']).save(directory / f'{name}_{written.get(name, 0)}.png')
        written[name] = written.get(name, 0) + 1
  log(f'wrote example test images to {directory}')
