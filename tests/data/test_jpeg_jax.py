"""gta_jax.data.jpeg_jax: the JAX JPEG round trip against PIL's (libjpeg-turbo) bit for bit."""
import jax
import numpy as np
import pytest

from gta_jax.data import augment
from gta_jax.data import builders
from gta_jax.data import jpeg_jax

QUALITIES = (1, 10, 50, 75, 95, 100)


def pil_roundtrip(images, qualities):
  return np.stack([augment.jpeg(image, int(q)) for image, q in zip(images, qualities)])


def assert_matches_pil(images, qualities, out=None):
  qualities = np.broadcast_to(np.asarray(qualities), (len(images),))
  if out is None:
    out = jpeg_jax.jpeg_roundtrip(images, qualities)
  out = np.asarray(out)
  assert out.dtype == np.uint8 and out.shape == images.shape
  want = pil_roundtrip(images, qualities)
  diff = np.abs(out.astype(int) - want)
  # Exact, not just the 99.9% / 1 level: every pixel of every image.
  differing = qualities[diff.reshape(len(images), -1).max(1) > 0]
  assert diff.max() == 0, (f'{(diff == 0).mean():.5f} of pixels exact, max diff {diff.max()}, '
                           f'at qualities {sorted(set(differing.tolist()))}')


def test_reciprocal_quantiser_is_rounding_division():
  """libjpeg-turbo's quantize (reciprocal multiply, compute_reciprocal) equals round-half-away
  division by qtable << 3 for every 16-bit coefficient magnitude and every baseline table entry."""
  x = np.arange(1 << 15, dtype=np.int64)
  for q in range(1, 256):
    recip, corr, shift = jpeg_jax._reciprocal(q << 3)
    np.testing.assert_array_equal(((x + corr) * recip) >> shift, (x + (q << 2)) // (q << 3))


def mixed_images(rng, h, w, count=6):
  """Random noise, smooth gradients, greyscale-like (R = G = B) and saturated images."""
  yy, xx = np.mgrid[0:h, 0:w]
  images = rng.integers(0, 256, (count, h, w, 3), dtype=np.uint8)
  images[1] = np.stack([(xx * 7) % 256, (yy * 5 + xx * 3) % 256, (yy * 11 + 40) % 256], -1)
  images[2] = np.repeat(rng.integers(0, 256, (h, w, 1), dtype=np.uint8), 3, -1)
  images[3] = (((yy + xx) % 2) * 255)[..., None]     # checkerboard: largest AC terms
  images[4, ..., 1] = 0                                # saturated colours
  images[5] = np.repeat(((xx + yy) * 4 % 256)[..., None], 3, -1)
  return images


@pytest.mark.parametrize('h, w', [(8, 8), (16, 16), (17, 23), (33, 40), (64, 64), (23, 9)])
def test_matches_pil_bit_for_bit(h, w):
  rng = np.random.default_rng(h * 1000 + w)
  assert_matches_pil(mixed_images(rng, h, w), QUALITIES)


@pytest.mark.parametrize('h, w', [(1, 1), (5, 3), (2, 4), (7, 1)])
def test_tiny_images_match_pil(h, w):
  """At most 2 chroma samples wide: libjpeg-turbo upsamples by plain replication, not fancy."""
  rng = np.random.default_rng(h * 10 + w)
  assert_matches_pil(mixed_images(rng, h, w), QUALITIES)


def test_every_quality_matches_pil():
  rng = np.random.default_rng(7)
  images = rng.integers(0, 256, (100, 16, 24, 3), dtype=np.uint8)
  images[::2] = np.repeat(images[::2, ..., :1], 3, -1)
  assert_matches_pil(images, np.arange(1, 101))


def test_quality_is_clipped_as_libjpeg_does():
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
  np.testing.assert_array_equal(jpeg_jax.jpeg_roundtrip(images, np.array([0, 101])),
                                jpeg_jax.jpeg_roundtrip(images, np.array([1, 100])))


def test_jit_with_traced_quality_compiles_once():
  rng = np.random.default_rng(11)
  images = mixed_images(rng, 24, 31)
  roundtrip = jax.jit(jpeg_jax.jpeg_roundtrip)
  for qualities in (np.array([10, 20, 30, 40, 50, 60]), np.array([75, 80, 85, 90, 95, 99])):
    assert_matches_pil(images, qualities, roundtrip(images, qualities))
  assert_matches_pil(images, 33, roundtrip(images, np.int32(33)))  # a traced scalar
  assert roundtrip._cache_size() == 2  # one per quality shape, none per value


def bundled_photo_crops(rng, h, w, count):
  """Crops of the photos the built-in dataset cuts its real images from."""
  photos = builders.module('synthetic_fingerprints.generation').load_bundled_photos()
  crops = []
  for i in range(count):
    photo = photos[i % len(photos)]
    top = rng.integers(0, photo.shape[0] - h + 1)
    left = rng.integers(0, photo.shape[1] - w + 1)
    crops.append(photo[top:top + h, left:left + w])
  return np.stack(crops)


def test_photographic_crops_match_pil():
  rng = np.random.default_rng(5)
  crops = bundled_photo_crops(rng, 37, 50, 18)
  assert_matches_pil(crops, rng.integers(10, 96, len(crops)))


@pytest.mark.slow
@pytest.mark.parametrize('size', [8, 15, 32, 63, 128, 129, 200, 256])
def test_photographic_crops_match_pil_sweep(size):
  """The issue's parity sweep: the built-in data's photos, sizes 8..256 (square and not), every
  quality 10..95."""
  rng = np.random.default_rng(size)
  qualities = np.arange(10, 96)
  for h, w in ((size, size), (size, max(8, size * 3 // 4 + 1))):
    crops = bundled_photo_crops(rng, h, w, len(qualities))
    assert_matches_pil(crops, qualities)


def test_rejects_other_shapes():
  with pytest.raises(ValueError):
    jpeg_jax.jpeg_roundtrip(np.zeros((8, 8, 3), np.uint8), 50)
  with pytest.raises(ValueError):
    jpeg_jax.jpeg_roundtrip(np.zeros((1, 8, 8, 2), np.uint8), 50)


@pytest.mark.parametrize('h, w', [(8, 8), (17, 23), (1, 5)])
def test_greyscale_jpeg_matches_pil(h, w):
  """[N, H, W, 1]: PIL's mode 'L' JPEG (one component, luminance table)."""
  import io
  from PIL import Image
  rng = np.random.default_rng(h + w)
  images = mixed_images(rng, h, w)[..., :1]
  out = np.asarray(jpeg_jax.jpeg_roundtrip(images, np.array(QUALITIES)))
  for image, got, q in zip(images, out, QUALITIES):
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0], 'L').save(buffer, format='JPEG', quality=q)
    want = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
    np.testing.assert_array_equal(got[..., 0], want)
