"""The perturbations measured from what they produced, not from the arguments they were given: a
silent fallback (RINE's `cv2.imencode('.jpg', img, [factor, 90])` set no quality, so its "JPEG
robustness" ran at OpenCV's default 95) would fail here.

Each draw goes through `augment.augment_recorded` in the single-kind mode, as the training and
test pipelines call it; what it applied is read back from the output (or the JPEG bytes it
decoded).
"""
import cv2
import numpy as np
import pytest

from gta_jax.data import augment
from gta_jax.data import containers

DRAWS = 400


def _draws(mode, image, options=augment.Options(), draws=DRAWS):
  """The outputs of `draws` single-kind draws that applied their perturbation."""
  outputs = []
  for seed in range(draws):
    out, applied = augment.augment_recorded(image, mode, np.random.default_rng(seed), options)
    if applied:
      outputs.append(out)
  assert len(outputs) > draws // 3  # half the images, by the mode's coin
  return outputs


def test_every_jpeg_quality_from_10_to_75_is_written_as_its_quantisation_tables(monkeypatch):
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  for quality in range(1, 101):  # the estimator itself, on every quality libjpeg writes
    assert containers.read_jpeg(augment.jpeg_bytes(image, quality))['quality'] == quality
  written = []
  original = augment.jpeg_bytes
  monkeypatch.setattr(augment, 'jpeg_bytes', lambda im, q: written.append(original(im, q)) or
                      written[-1])
  _draws('jpeg', image, draws=2000)  # ~1000 encodes: each of the 66 qualities drawn
  seen = [containers.read_jpeg(data) for data in written]
  assert all(s['quality_exact'] and s['subsampling'] == '4:2:0' for s in seen)
  assert {s['quality'] for s in seen} == set(range(10, 76))  # U[10, 75], every value reached


def _impulse_sigma(out: np.ndarray) -> float:
  """The standard deviation, in px, of a blurred single bright pixel along x."""
  row = out[..., 0].astype(np.float64).sum(axis=0)
  x = np.arange(row.size) - row.size // 2
  return float(np.sqrt((row * x ** 2).sum() / row.sum()))


@pytest.mark.parametrize('release', [False, True])
def test_the_blur_kernels_and_sigmas_are_those_configured(release):
  """OpenCV's automatic sigma (its fixed tables for k <= 7) for kernels 3/5/7/9, or the release's
  sigma 4; the effective sigma of each kernel measured on an impulse."""
  image = np.zeros((41, 41, 3), np.uint8)
  image[20, 20] = 255
  measured = sorted({round(_impulse_sigma(out), 1) for out in
                     _draws('blur', image, options=augment.Options(release_blur_sigma=release))})
  expected = []
  for k in augment.BLUR_KERNELS:
    kernel = cv2.getGaussianKernel(k, 4.0 if release else 0).ravel()
    x = np.arange(k) - k // 2
    expected.append(round(float(np.sqrt((kernel * x ** 2).sum())), 1))
  assert measured == sorted(set(expected)), (measured, expected)
  if not release:  # k = 3: OpenCV's fixed [1, 2, 1] / 4 (sqrt(0.5) px); k = 9: its rule, 1.7 px
    assert measured[0] == pytest.approx(0.71, abs=0.02)
    assert measured[-1] == pytest.approx(1.7, abs=0.1)


def test_the_crop_removes_5_to_20_percent_per_axis_and_restores_the_size():
  width = 200
  ramp = np.broadcast_to(np.arange(width, dtype=np.uint8)[None, :, None], (width, width, 3)).copy()
  fractions = []
  for out in _draws('crop', ramp):
    assert out.shape == ramp.shape
    row = out[width // 2, :, 0].astype(np.float64)
    fractions.append((width - 1 - (row[-1] - row[0])) / width)  # the columns cut away
  fractions = np.array(fractions)
  assert fractions.min() >= 0.05 - 1.5 / width and fractions.max() < 0.2 + 1.5 / width
  assert fractions.min() < 0.07 and fractions.max() > 0.18  # the range is used, not one value


@pytest.mark.parametrize('variance, low, high', [(False, 5, 20), (True, 5 ** 0.5, 20 ** 0.5)])
def test_the_noise_std_is_the_one_configured(variance, low, high):
  """std U[5, 20] on the 0-255 scale (the release), or sqrt(U[5, 20]) (the paper's "variance");
  measured on a flat grey image, where nothing clips."""
  grey = np.full((64, 64, 3), 128, np.uint8)
  stds = np.array([(out.astype(np.float64) + 0.5 - 128).std() for out in  # + 0.5: truncation
                   _draws('noise', grey, options=augment.Options(noise_variance=variance))])
  quantisation = np.sqrt(1 / 12)  # truncating to integers adds this much
  assert stds.min() > low - 0.1 and np.sqrt(np.maximum(stds ** 2 - quantisation ** 2, 0)).max() \
      < high + 0.15
  assert stds.min() < low + 0.1 * (high - low) and stds.max() > high - 0.1 * (high - low)
