"""Lineage checks: which earlier run a phase may continue from or build its heads on."""
import json

import pytest

from conftest import ROOT
from configs import common
from gta_jax import chains
from gta_jax import errors
from gta_jax.io import checkpoints
from gta_jax.io import run_records


def _run(tmp_path, dataset: str, input_kind: str = 'pixel', size: int = 32,
         data_config: str = 'default'):
  """A run folder as a finished run leaves it, as far as the check reads it: config.json, and the
  spec of its model bundle."""
  run = tmp_path / f'{dataset}_{data_config}_{input_kind}_{size}'
  (run / 'model').mkdir(parents=True)
  (run / 'config.json').write_text(json.dumps({'data': {'name': dataset, 'config': data_config}}))
  return run, checkpoints.ModelSpec(input_kind, size)


def _heads_config(dataset: str, input_kind: str = 'pixel'):
  config = common.get_config()
  config.data.name, config.data.config, config.model.input = dataset, 'newgan-8-2-2', input_kind
  return config


@pytest.mark.parametrize('input_kind', ['pixel', 'dct'])
def test_heads_on_a_folder_dataset_build_on_a_primary_of_another_dataset_at_its_size(
    tmp_path, input_kind):
  run, spec = _run(tmp_path, 'synthetic_fingerprints', input_kind, 32)
  run_records.check_lineage(_heads_config('folder', input_kind), 32, run / 'model', spec,
                            'config.init.primary')
  with pytest.raises(errors.ConfigError, match=r'trained on 32 px images but folder/newgan-8-2-2 '
                     r'has 64 px images: prepare your folder at its size .*--image-size 32'):
    run_records.check_lineage(_heads_config('folder', input_kind), 64, run / 'model', spec,
                              'config.init.primary')


def test_other_datasets_and_roles_still_need_the_primarys_dataset(tmp_path):
  run, spec = _run(tmp_path, 'synthetic_fingerprints')
  with pytest.raises(errors.ConfigError, match='was trained on synthetic_fingerprints'):
    run_records.check_lineage(_heads_config('ganfp'), 32, run / 'model', spec,
                              'config.init.primary')
  with pytest.raises(errors.ConfigError, match='was trained on synthetic_fingerprints'):
    run_records.check_lineage(_heads_config('folder'), 32, run, spec, 'config.init.from_run')
  with pytest.raises(errors.ConfigError, match="takes pixel input but config.model.input='dct'"):
    run_records.check_lineage(_heads_config('folder', 'dct'), 32, run, spec,
                              'config.init.primary')


def test_a_primary_of_another_folder_dataset_must_match_the_image_size_too(tmp_path):
  """Another tag is other data: its primary serves at the same image size; the same folder
  dataset's runs (phase IV on phase III, re-evaluation) keep the dataset rule alone."""
  other, spec = _run(tmp_path, 'folder', 'pixel', 64, data_config='oldgan')
  with pytest.raises(errors.ConfigError, match='trained on 64 px images but folder/newgan-8-2-2'):
    run_records.check_lineage(_heads_config('folder'), 32, other / 'model', spec,
                              'config.init.primary')
  same, spec = _run(tmp_path, 'folder', 'pixel', 64, data_config='newgan-8-2-2')
  run_records.check_lineage(_heads_config('folder'), 32, same / 'model', spec,
                            'config.init.primary')


def test_a_run_reached_by_another_path_is_the_same_run(tmp_path, monkeypatch):
  """The review's case: the quickstart chain rerun with --workdir=$PWD/runs/... after a relative
  run resolves its lineage to the absolute form of the same folders; that is no other setting."""
  monkeypatch.chdir(tmp_path)
  config = chains.load_config_file(str(ROOT / 'configs' / 'phase2_synthetic.py'))
  relative = run_records.resolve_lineage(config, 'runs/phase2_synthetic')
  (tmp_path / 'runs' / 'phase2_synthetic').mkdir(parents=True)
  (tmp_path / 'runs' / 'phase2_synthetic' / 'config.json').write_text(
      relative.to_json_best_effort())
  absolute = run_records.resolve_lineage(config, tmp_path / 'runs' / 'phase2_synthetic')
  assert absolute.init.from_run != relative.init.from_run
  run_records.check_resume_config(tmp_path / 'runs' / 'phase2_synthetic', absolute, finished=True)
  with absolute.unlocked():
    absolute.init.from_run = str(tmp_path / 'elsewhere')
  with pytest.raises(errors.ConfigError, match='config.init.from_run'):
    run_records.check_resume_config(tmp_path / 'runs' / 'phase2_synthetic', absolute, finished=True)
