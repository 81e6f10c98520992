"""Config chains (the quickstart): run several phase configs in order, each wired to the previous
one's run, then leave a few example test images to try `attribute` on."""
import importlib.util
import pathlib

import ml_collections
from PIL import Image

from gta_jax import data
from gta_jax.writers import log

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config_file(path: str, arg: str = '') -> ml_collections.ConfigDict:
  """Loads `get_config(arg)` from a config file path, as config_flags does."""
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def run_chain(config, workdir: pathlib.Path, train_and_evaluate) -> dict:
  """Runs each config of `config.chain` with `train_and_evaluate(phase_config, phase_workdir)`,
  wiring each phase's 'runs/...' references into `workdir`."""
  arg = 'smoke' if config.data.config == 'smoke' else ''
  results = {}
  for path in config.chain:
    phase = load_config_file(str(ROOT / path), arg)
    with phase.unlocked():
      phase.data.name, phase.data.config = config.data.name, config.data.config
      phase.data.data_dir, phase.seed = config.data.data_dir, config.seed
      for field in ('from_run', 'primary'):
        value = phase.init[field]
        if value.startswith('runs/'):
          phase.init[field] = str(workdir / value[len('runs/'):])
    log(f'--- {phase.name} -> {workdir / phase.name}')
    results[phase.name] = train_and_evaluate(phase, workdir / phase.name)
  write_examples(config, workdir / 'examples')
  return results


def write_examples(config, directory: pathlib.Path, per_source: int = 2) -> None:
  """A few test images per source as PNG files, to try `python -m gta_jax.attribute` on."""
  if directory.is_dir():
    return
  dataset = data.open_dataset(config.data, config.model.input)
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
