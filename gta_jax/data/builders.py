"""The TFDS builders of the repository's datasets/ folder, imported as the package
`gta_jax_datasets` (pyproject.toml installs datasets/ under that name; from a source tree that is
not installed, the folder is loaded under the same name). A private name: a top-level `datasets`
would collide with other packages of that name (Hugging Face's), and no sys.path is edited."""
import importlib
import importlib.util
import pathlib
import sys

PACKAGE = 'gta_jax_datasets'
FOLDER = pathlib.Path(__file__).resolve().parents[2] / 'datasets'


def _package():
  if PACKAGE in sys.modules:
    return sys.modules[PACKAGE]
  try:
    return importlib.import_module(PACKAGE)
  except ModuleNotFoundError:
    pass
  spec = importlib.util.spec_from_file_location(PACKAGE, FOLDER / '__init__.py',
                                                submodule_search_locations=[str(FOLDER)])
  if spec is None:
    raise ModuleNotFoundError(f'{FOLDER}: the dataset builders are missing; reinstall gta_jax '
                              '(pip install -e . from the repository).')
  package = importlib.util.module_from_spec(spec)
  sys.modules[PACKAGE] = package
  spec.loader.exec_module(package)
  return package


def module(dotted: str):
  """datasets/<dotted path>.py, e.g. module('ganfp.ganfp_dataset_builder')."""
  _package()
  return importlib.import_module(f'{PACKAGE}.{dotted}')
