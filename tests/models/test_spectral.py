import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import scipy.fft

from conftest import RELEASE_STATS
from gta_jax.models import spectral

RNG = np.random.default_rng(0)


def test_greyscale_is_bit_identical_to_pil():
  images = RNG.integers(0, 256, (4, 37, 53, 3), dtype=np.uint8)
  images[0, 0, :3] = [[255, 255, 255], [0, 0, 0], [128, 127, 129]]
  ours = np.asarray(jax.jit(spectral.greyscale)(jnp.asarray(images)))
  for image, grey in zip(images, ours):
    np.testing.assert_array_equal(grey, np.asarray(Image.fromarray(image).convert('L')))


@pytest.mark.parametrize('jit', [False, True])
@pytest.mark.parametrize('shape', [(32, 32), (2, 24, 40)])
def test_dct2_matches_scipy_ortho_dct2(shape, jit):
  x = RNG.uniform(0, 255, shape).astype(np.float32)
  fn = jax.jit(spectral.dct2) if jit else spectral.dct2
  ours = np.asarray(fn(jnp.asarray(x)))
  expected = scipy.fft.dctn(x.astype(np.float64), type=2, norm='ortho', axes=(-2, -1))
  np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-6 * np.abs(expected).max())


def test_log_dct_float64_twin_matches_release_preprocessing():
  image = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
  grey = np.asarray(Image.fromarray(image).convert('L'), np.float64)
  expected = np.log(np.abs(scipy.fft.dctn(grey, type=2, norm='ortho')) + 1e-12)
  np.testing.assert_allclose(spectral.log_dct_numpy(image), expected, atol=1e-8)
  ours32 = np.asarray(jax.jit(spectral.log_dct)(jnp.asarray(image)))
  # float32 agrees except for near-zero coefficients, where ln amplifies the rounding error.
  assert np.median(np.abs(ours32 - expected)) < 1e-5


def test_dct_features_shape_and_normalisation():
  images = RNG.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
  mean, std = np.full((16, 16), 2.0), np.full((16, 16), 4.0)
  x = spectral.dct_features(jnp.asarray(images), mean, std)
  assert x.shape == (3, 16, 16, 1) and x.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(x)[..., 0],
                             (spectral.log_dct_numpy(images) - 2) / 4, atol=2e-3)


def test_welford_equals_population_mean_and_std_over_batches(tmp_path):
  data = RNG.normal(3, 2, (50, 8, 8))
  stats = spectral.DctStats()
  for start in (0, 7, 8, 30):  # uneven batches, including a size-1 batch
    stop = {0: 7, 7: 8, 8: 30, 30: 50}[start]
    stats.update(data[start:stop])
  assert stats.count == 50
  np.testing.assert_allclose(stats.mean, data.mean(0), atol=1e-12)
  np.testing.assert_allclose(stats.std, data.std(0, ddof=0), atol=1e-12)
  stats.save(tmp_path)
  mean, std = spectral.load_dct_stats(tmp_path)
  np.testing.assert_array_equal(mean, stats.mean)
  np.testing.assert_array_equal(std, stats.std)


def test_missing_stats_error_names_folder_and_files(tmp_path):
  np.save(tmp_path / 'mean.npy', np.zeros((4, 4)))
  with pytest.raises(FileNotFoundError, match=r'std_dev\.npy'):
    spectral.load_dct_stats(tmp_path)


@pytest.mark.skipif(not RELEASE_STATS.is_dir(), reason='release DCT statistics not present')
@pytest.mark.parametrize('name, size', [('ganfp', 128), ('faceshq_plus', 256)])
def test_release_statistics_load_as_they_are(name, size):
  mean, std = spectral.load_dct_stats(RELEASE_STATS / name)
  assert mean.shape == (size, size) and mean.dtype == np.float64
  if name == 'ganfp':  # figures from the authors' notes
    assert abs(mean[0, 0] - 9.575) < 1e-3 and abs(std[0, 0] - 0.256) < 1e-3
