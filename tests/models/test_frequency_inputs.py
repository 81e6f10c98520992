"""The heads' auxiliary frequency inputs (gta_jax/models/frequency.py, config.recipe.frequency_inputs):
each map against an independent scipy / numpy computation, padding invariance in mixed-size
batches, and the recipe from training through the bundle to attribute."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft
import scipy.ndimage

from conftest import recipe_config
from conftest import ROOT
from gta_jax import chains
from gta_jax import errors
from gta_jax import evaluation
from gta_jax import train
from gta_jax.io import checkpoints
from gta_jax.io import outputs
from gta_jax.models import frequency
from gta_jax.models import networks

LUMA = np.array([0.299, 0.587, 0.114])


def _image(rng, height, width):
  return rng.uniform(-1, 1, (height, width, 3)).astype(np.float32)


def _standardised(x):
  return (x - x.mean()) / x.std()


def _cells(pixels):
  """[H, W] (multiples of 4) -> [H/4, W/4, 16], each 4x4 block row-major."""
  h, w = pixels.shape
  return pixels.reshape(h // 4, 4, w // 4, 4).transpose(0, 2, 1, 3).reshape(h // 4, w // 4, 16)


def test_each_map_matches_an_independent_computation():
  image = _image(np.random.default_rng(0), 32, 40)
  luma = (image.astype(np.float64) @ LUMA)
  got = np.asarray(frequency.frequency_features(jnp.asarray(image)[None],
                                                ('phase', 'highpass', 'dct'))[0])
  assert got.shape == (8, 10, 48)
  spectrum = np.fft.fft2(luma - luma.mean())
  phase_only = np.real(np.fft.ifft2(np.exp(1j * np.angle(spectrum)) * (np.abs(spectrum) > 0)))
  residual = luma - scipy.ndimage.uniform_filter(luma, 3, mode='constant')
  blocks = luma.reshape(8, 4, 10, 4).transpose(0, 2, 1, 3)
  block_dct = np.log(np.abs(scipy.fft.dctn(blocks, axes=(2, 3), norm='ortho')) + 1e-3)
  for k, want in enumerate([_cells(phase_only), _cells(residual), block_dct.reshape(8, 10, 16)]):
    np.testing.assert_allclose(got[..., 16 * k:16 * (k + 1)], _standardised(want), atol=2e-4)


def test_the_phase_only_map_keeps_the_phase_and_flattens_the_magnitude():
  image = _image(np.random.default_rng(1), 24, 24)
  mask = jnp.ones((1, 24, 24))
  luma = jnp.asarray(image @ LUMA.astype(np.float32))[None]
  rebuilt = np.fft.fft2(np.asarray(frequency.phase_only(luma, mask))[0])
  original = np.fft.fft2(np.asarray(luma[0]) - float(luma.mean()))
  nonzero = np.abs(original) > 1e-3
  np.testing.assert_allclose(np.abs(rebuilt)[nonzero], 1.0, atol=1e-4)
  np.testing.assert_allclose(np.angle(rebuilt[nonzero] / original[nonzero]), 0.0, atol=1e-3)


@pytest.mark.parametrize('names', [('highpass',), ('dct',), ('highpass', 'dct')])
def test_local_maps_of_an_image_padded_into_a_batch_are_its_own(names):
  rng = np.random.default_rng(2)
  small, large = _image(rng, 30, 22), _image(rng, 48, 48)  # 30 x 22: cells straddle the edge
  batch = np.zeros((2, 48, 48, 3), np.float32)
  batch[0, :30, :22], batch[1] = small, large
  valid = jnp.asarray([[30, 22], [48, 48]])
  padded = np.asarray(frequency.frequency_features(jnp.asarray(batch), names, valid))
  alone = np.asarray(frequency.frequency_features(jnp.asarray(small)[None], names))[0]
  np.testing.assert_allclose(padded[0, :8, :6], alone, atol=1e-4)
  assert np.all(padded[0, 8:] == 0) and np.all(padded[0, :, 6:] == 0)
  np.testing.assert_allclose(
      padded[1], np.asarray(frequency.frequency_features(jnp.asarray(large)[None], names))[0],
      atol=1e-4)
  assert frequency.needs_exact_size(names) is False
  assert frequency.needs_exact_size(('dct', 'phase')) is True


def test_unknown_or_repeated_names_are_refused_naming_the_key():
  for names in (('dft',), ('dct', 'dct')):
    with pytest.raises(ValueError, match='config.recipe.frequency_inputs'):
      frequency.check_names(names)


def test_frequency_heads_train_export_and_attribute_images_of_any_size(
    smoke_data_dir, smoke_primary, tmp_path):
  """The `pretrained` recipe: transformation pre-training, then frequency-input heads."""
  from PIL import Image

  from gta_jax.families import pretrain
  from gta_jax.tools import attribute
  config = recipe_config(smoke_data_dir, smoke_primary, 'pretrained')
  assert config.recipe.frequency_inputs == ('phase', 'highpass', 'dct')
  workdir = tmp_path / 'frequency'
  results = train.train_and_evaluate(config, workdir)
  assert set(results['clean']['heads']) == set(config.sources)
  record = json.loads((workdir / 'pretraining.json').read_text())
  assert record['steps'] == config.recipe.pretrain_steps > 0
  assert record['classes'] == list(pretrain.TRANSFORMS)
  spec, variables, _ = checkpoints.load_model_bundle(workdir / 'model')  # checks the layout
  assert spec.head_frequency_inputs == ('phase', 'highpass', 'dct')
  assert variables['heads']['params']['heads']['conv_01']['kernel'].shape[-2] == 16 + 48

  # attribute scores a test image as the training-time predict step does, and an image batched
  # with images of other sizes as it scores it alone (exact-size batches for the global map)
  examples = tmp_path / 'images'
  chains.write_examples(config, examples)
  written = sorted(examples.iterdir())
  first = written[0]
  rgb = np.asarray(Image.open(first).convert('RGB'))
  Image.fromarray(np.tile(rgb, (2, 2, 1))[:40, :56]).save(examples / 'tiled_40x56.png')
  folder_json, alone_json = tmp_path / 'folder.json', tmp_path / 'alone.json'
  assert attribute.main(['--model', str(workdir), str(examples), '--json', str(folder_json)]) == 0
  assert attribute.main(['--model', str(workdir), str(first), '--json', str(alone_json)]) == 0
  folder = {r['path']: r for r in outputs.load(folder_json)}
  alone = outputs.load(alone_json)[0]
  for head, p in alone['p_heads'].items():
    assert folder[alone['path']]['p_heads'][head] == pytest.approx(p, abs=1e-5)
  assert len(folder) == len(written) + 1 and all(r['error'] is None for r in folder.values())

  family = evaluation.setup(config, tmp_path / 'again')[1]
  step = family.make_predict_step()
  x = jnp.asarray(rgb[None])
  _, p_heads = step(variables['heads'], family.constants(), x)
  direct = networks.predict(variables, (x / 127.5 - 1.0), input_kind='pixel',
                          num_heads=len(config.sources),
                          frequency_inputs=spec.head_frequency_inputs)
  np.testing.assert_allclose(np.asarray(p_heads)[:, 0],
                             np.asarray(1 / (1 + np.exp(-np.asarray(direct.heads.logit))))[:, 0],
                             atol=1e-5)
  with pytest.raises(errors.ConfigError, match='frequency inputs'):
    family_without = evaluation.setup(recipe_config(smoke_data_dir, smoke_primary, 'frequency',
                                               **{'recipe.frequency_inputs': ('dct',)}),
                                 tmp_path / 'other')[1]
    family_without.variables_from_bundle(spec, variables, workdir / 'model')


def test_frequency_inputs_are_checked_by_name_and_family(smoke_data_dir, smoke_primary, tmp_path):
  bad = recipe_config(smoke_data_dir, smoke_primary, 'frequency',
                      **{'recipe.frequency_inputs': ('fft',)})
  with pytest.raises(errors.ConfigError, match='config.recipe.frequency_inputs'):
    train.train_and_evaluate(bad, tmp_path / 'bad')
  detector = chains.load_config_file(str(ROOT / 'configs' / 'phase1_synthetic.py'), 'smoke')
  with detector.unlocked():
    detector.data.data_dir = smoke_data_dir
    detector.recipe.frequency_inputs = ('dct',)
  with pytest.raises(errors.ConfigError, match="only the secondary heads"):
    train.train_and_evaluate(detector, tmp_path / 'detector')


def test_a_bundle_whose_heads_do_not_fit_its_frequency_inputs_is_refused(tmp_path):
  import jax
  spec = checkpoints.ModelSpec('pixel', 32, ('a',), head_frequency_inputs=('dct',))
  variables = {'primary': networks.init_variables(networks.Primary(), jax.random.key(0),
                                                (1, 32, 32, 3)),
               'heads': networks.init_variables(networks.StackedHeads(1), jax.random.key(1),
                                              (1, 8, 8, 16))}
  with pytest.raises(errors.ConfigError, match='conv_01'):
    checkpoints.check_variables(spec, variables, tmp_path)
  record = {**spec.to_json(), 'primary_digest': '0' * 64, 'head_frequency_inputs': ['dct', 'x']}
  with pytest.raises(errors.ConfigError, match='head_frequency_inputs'):
    checkpoints.ModelSpec.from_json(record, tmp_path / 'model.json')
