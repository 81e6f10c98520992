"""Import of release .h5 models, checked against an independent numpy forward pass of the arrays."""
import json

import h5py
import jax
import numpy as np
import pytest
from PIL import Image

import keras_reference as ref
from conftest import RELEASE_STATS, RELEASE_WEIGHTS, requires_release
from gta_jax import attribute, checkpoints, keras_import, models, spectral

RNG = np.random.default_rng(0)


def _predict(spec, variables, x):
  out = models.predict(variables, np.asarray(x, np.float32), input_kind=spec.input_kind,
                       num_heads=len(spec.head_names))
  p_fake = np.asarray(jax.nn.sigmoid(out.primary.logit))
  p_heads = np.asarray(jax.nn.sigmoid(out.heads.logit)) if spec.head_names else None
  return p_fake, p_heads


@pytest.mark.parametrize('in_channels, gap, heads', [
    (3, True, ()), (3, True, ('a',)), (1, False, ('a',)), (3, True, ('a1', 'a2', 'a3'))])
def test_synthetic_release_file_imports_and_matches_numpy_forward(tmp_path, in_channels, gap, heads):
  size = 32
  layers = ref.random_layers(RNG, ref.layer_shapes(in_channels, gap, size, heads))
  path = tmp_path / 'attribution_ganfp_progan.h5'
  ref.write_h5(path, layers, (size, size, in_channels))
  spec, variables = keras_import.import_h5(path)
  assert spec.input_kind == ('pixel' if gap else 'dct') and spec.image_size == size
  assert spec.head_names == (('progan',) if heads == ('a',) else heads)
  x = RNG.normal(0, 1, (3, size, size, in_channels))
  p_fake, p_heads = _predict(spec, variables, x)
  expected_fake, expected_heads = ref.forward(ref.read_layers(path), x, heads)
  np.testing.assert_allclose(p_fake, expected_fake, atol=1e-5)
  for k, prefix in enumerate(heads):
    np.testing.assert_allclose(p_heads[k], expected_heads[prefix], atol=1e-5)


def test_bundle_round_trip_keeps_weights_and_refuses_tampering(tmp_path):
  layers = ref.random_layers(RNG, ref.layer_shapes(1, False, 16, ('a',)))
  ref.write_h5(tmp_path / 'm.h5', layers, (16, 16, 1))
  mean, std = RNG.normal(0, 1, (16, 16)), RNG.uniform(0.5, 2, (16, 16))
  stats_dir = tmp_path / 'stats'
  spectral.DctStats(mean=mean, std=std, count=1).save(stats_dir)
  assert keras_import.main([str(tmp_path / 'm.h5'), str(tmp_path / 'bundle'),
                            '--dct-stats', str(stats_dir), '--head-names', 'mine']) == 0
  spec, variables, (loaded_mean, loaded_std) = checkpoints.load_model_bundle(tmp_path / 'bundle')
  assert spec.head_names == ('mine',) and spec.input_kind == 'dct'
  np.testing.assert_array_equal(loaded_mean, mean)
  np.testing.assert_allclose(loaded_std, std, rtol=1e-15)
  _, direct = keras_import.import_h5(tmp_path / 'm.h5')
  jax.tree.map(np.testing.assert_array_equal, variables, direct)
  # A bundle whose primary changed no longer matches its recorded digest.
  record = json.loads((tmp_path / 'bundle' / 'model.json').read_text())
  record['primary_digest'] = '0' * 64
  (tmp_path / 'bundle' / 'model.json').write_text(json.dumps(record))
  with pytest.raises(ValueError, match='digest'):
    checkpoints.load_model_bundle(tmp_path / 'bundle')


def test_dct_model_without_stats_is_a_usage_error(tmp_path, capsys):
  layers = ref.random_layers(RNG, ref.layer_shapes(1, False, 16, ()))
  ref.write_h5(tmp_path / 'm.h5', layers, (16, 16, 1))
  with pytest.raises(SystemExit) as exit_info:
    keras_import.main([str(tmp_path / 'm.h5'), str(tmp_path / 'out')])
  assert exit_info.value.code == 2
  assert '--dct-stats' in capsys.readouterr().err


def test_foreign_h5_files_get_clear_errors(tmp_path):
  with h5py.File(tmp_path / 'x.h5', 'w') as h5:
    h5.create_dataset('data', data=np.zeros(3))
  with pytest.raises(keras_import.H5ImportError, match='model_weights'):
    keras_import.import_h5(tmp_path / 'x.h5')
  (tmp_path / 'y.h5').write_bytes(b'garbage')
  with pytest.raises(keras_import.H5ImportError, match='not a readable HDF5'):
    keras_import.import_h5(tmp_path / 'y.h5')
  layers = ref.random_layers(RNG, ref.layer_shapes(3, True, 16, ()))
  layers['dConv_03']['kernel'] = layers['dConv_03']['kernel'][..., :8]  # wrong width
  layers['dConv_03']['bias'] = layers['dConv_03']['bias'][:8]
  ref.write_h5(tmp_path / 'z.h5', layers, (16, 16, 3))
  with pytest.raises(keras_import.H5ImportError, match='conv_03'):
    keras_import.import_h5(tmp_path / 'z.h5')


def test_head_name_from_release_file_names():
  assert keras_import.head_name_from_filename('attribution_ganfp_progan_dct_aug.h5') == 'progan'
  assert keras_import.head_name_from_filename('attribution_faceshqp_stylegan2.h5') == 'stylegan2'
  assert keras_import.head_name_from_filename('primary_ganfp_crop_es20.h5') is None


# --- the authors' released files, when present -------------------------------------------------

RELEASE_TOTALS = {('pixel', 0): 27_261, ('dct', 0): 35_367, ('pixel', 1): 48_606, ('dct', 1): 64_872}


@requires_release
def test_all_41_release_files_import_with_release_parameter_counts():
  files = sorted(RELEASE_WEIGHTS.rglob('*.h5'))
  assert len(files) == 41
  for path in files:
    spec, variables = keras_import.import_h5(path)
    assert models.count_parameters(variables) == RELEASE_TOTALS[
        (spec.input_kind, len(spec.head_names))], path.name
    if path.name.startswith('attribution'):
      assert spec.head_names == (keras_import.head_name_from_filename(path),)


def _test_images(directory, size, count=6):
  """PNGs a user might score: natural-image crops from skimage's bundled photos plus noise."""
  from skimage import data
  sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
  paths = []
  for i in range(count):
    photo = sources[i % len(sources)]
    top, left = RNG.integers(0, photo.shape[0] - size), RNG.integers(0, photo.shape[1] - size)
    crop = photo[top:top + size, left:left + size]
    if i >= len(sources):
      crop = np.clip(crop + RNG.normal(0, 8, crop.shape), 0, 255).astype(np.uint8)
    paths.append(directory / f'img_{i}.png')
    Image.fromarray(crop).save(paths[-1])
  return paths


@requires_release
@pytest.mark.parametrize('relative, stats', [
    ('primary_ganfp/primary_ganfp.h5', None),
    ('primary_ganfp_dct/primary_ganfp_dct_aug.h5', 'ganfp'),
    ('attribution_ganfp_progan/attribution_ganfp_progan_aug.h5', None),
    ('attribution_ganfp_cramergan_dct/attribution_ganfp_cramergan_dct.h5', 'ganfp'),
    ('attribution_faceshqp/attribution_faceshqp_tpdne.h5', None),
])
def test_release_models_through_attribute_match_numpy_keras_forward(tmp_path, relative, stats):
  """Probabilities from `attribute` on PNG inputs equal the release model's within 1e-4."""
  path = RELEASE_WEIGHTS / relative
  model = attribute.load_model(path, RELEASE_STATS / stats if stats else None)
  images = _test_images(tmp_path, model.spec.image_size)
  records = attribute.attribute(model, images)
  layers = ref.read_layers(path)
  for record, image_path in zip(records, images):
    assert record['error'] is None
    if stats:
      mean = np.load(RELEASE_STATS / stats / 'mean.npy')
      std = np.load(RELEASE_STATS / stats / 'std_dev.npy')
      x = ref.dct_input(str(image_path), mean, std)
    else:
      x = ref.pixel_input(np.asarray(Image.open(image_path).convert('RGB')))
    p_fake, p_heads = ref.forward(layers, x)
    assert abs(record['p_fake'] - p_fake[0]) < 1e-4, (image_path, record, p_fake)
    for name, p in record['p_heads'].items():
      assert abs(p - p_heads['a'][0]) < 1e-4, (image_path, name, p, p_heads)
