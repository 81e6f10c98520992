"""The install self-check (gta-verify): passes on the shipped data, fails naming the check when a
stored expectation is perturbed just past its tolerance, and exits 2 when its data is missing."""
import shutil

import jax
import numpy as np
import pytest

from gta_jax.models import networks
from gta_jax.tools import verify


@pytest.fixture()
def data_copy(tmp_path):
  directory = tmp_path / 'verify_data'
  shutil.copytree(verify.DATA_DIR, directory)
  return directory


def _perturb(directory, key, change):
  with np.load(directory / 'expected.npz', allow_pickle=False) as data:
    expected = {k: data[k] for k in data.files}
  expected[key] = change(expected[key].copy())
  np.savez_compressed(directory / 'expected.npz', **expected)


def test_shipped_data_passes(capsys):
  assert verify.main([]) == 0
  out = capsys.readouterr().out
  for line in ('jaxlib:', 'libjpeg-turbo (Pillow):', 'backend:', 'cpu:'):
    assert line in out
  assert 'DIFFERS' not in out and 'OK: all 13 checks agree' in out


def test_model_is_the_real_architecture_in_float16():
  variables = verify.load_weights(verify.DATA_DIR / 'model.npz')
  assert networks.count_parameters(variables['primary']) == 27_261
  assert networks.count_parameters(variables['heads']) == 2 * 21_345
  for leaf in jax.tree.leaves(variables):
    assert leaf.dtype == np.float32 and np.array_equal(leaf.astype(np.float16).astype(np.float32), leaf)


def _bump_logit(a):
  a[2] += 1.5 * verify.LOGIT_TOL
  return a


def _bump_jpeg_pixel(a):
  a[5, 7, 1] = a[5, 7, 1] + 2 if a[5, 7, 1] < 200 else a[5, 7, 1] - 2
  return a


def _bump_blur_pixel(a):
  a[0, 0, 0] = a[0, 0, 0] + 2 if a[0, 0, 0] < 200 else a[0, 0, 0] - 2
  return a


@pytest.mark.parametrize('key, change, named', [
    ('logit_fake', _bump_logit, ['scores: attribute()', 'scores: score_batch(padded, valid_size)']),
    ('jpeg_q50/noise', _bump_jpeg_pixel, ['JPEG q50: pixels']),
    ('blur_k9/rings_40x24', _bump_blur_pixel, ['blur k9']),
])
def test_perturbed_expectation_fails_naming_the_check(data_copy, capsys, key, change, named):
  _perturb(data_copy, key, change)
  assert verify.main(['--data', str(data_copy)]) == 1
  out = capsys.readouterr().out
  failed = out.split('FAILED: ')[1]
  assert failed.startswith(f'{len(named)} of 13 checks differ: ')
  for name in named:
    assert name in failed
    assert any(line.strip().startswith(name) and 'DIFFERS' in line for line in out.splitlines())


@pytest.mark.parametrize('name', ['model.npz', 'expected.npz', 'images/near_grey.png'])
def test_missing_data_exits_2_naming_the_file(data_copy, capsys, name):
  (data_copy / name).unlink()
  assert verify.main(['--data', str(data_copy)]) == 2
  assert f'{data_copy / name}: missing' in capsys.readouterr().err


def test_unreadable_data_exits_2_naming_the_file(data_copy, capsys):
  (data_copy / 'expected.npz').write_bytes(b'not a zip')
  assert verify.main(['--data', str(data_copy)]) == 2
  assert f'{data_copy / "expected.npz"}: unreadable' in capsys.readouterr().err
