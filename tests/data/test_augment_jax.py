"""gta_jax.data.augment_jax: the device blur, crop+resize and noise against the host functions."""
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gta_jax.data import augment
from gta_jax.data import augment_jax

SIZES = ((32, 32), (64, 64), (128, 128), (45, 37))
# (fraction, split_y, split_x): the draw's extremes (0.05, 0.2; splits 0 and 1) and between
CROPS = ((0.05, 0.0, 0.0), (0.05, 1.0, 1.0), (0.2, 0.0, 1.0), (0.2, 1.0, 0.0), (0.2, 0.5, 0.5),
         (0.13, 0.3, 0.8), (0.17, 0.25, 0.9), (0.1999, 0.999, 0.001), (0.0731, 0.61, 0.47))


def sample_images(h, w, seed=0):
  """[8, h, w, 3]: 4 uniform-random, 2 gradients, 2 smooth random (upsampled coarse noise)."""
  rng = np.random.default_rng(seed)
  random = rng.integers(0, 256, (4, h, w, 3))
  yy, xx = np.mgrid[:h, :w]
  gradient = np.stack([yy * 255 // h, xx * 255 // w, (xx + yy) * 127 // (h + w) + 64], -1)
  gradients = np.stack([gradient, 255 - gradient[:, ::-1]])
  coarse = rng.integers(0, 256, (2, h // 8 + 2, w // 8 + 2, 3))
  smooth = np.stack([np.kron(c, np.ones((8, 8, 1)))[:h, :w] for c in coarse])
  return np.concatenate([random, gradients, smooth]).astype(np.uint8)


def diff_stats(out, want):
  diff = np.abs(np.asarray(out).astype(int) - want.astype(int))
  return float((diff == 0).mean()), int(diff.max())


@pytest.mark.parametrize('sigma', [None, 4.0])
@pytest.mark.parametrize('h, w', SIZES)
def test_gaussian_blur_equals_opencv(h, w, sigma):
  """Bit-exact for every kernel, OpenCV's automatic sigma and the release's sigma 4."""
  images = sample_images(h, w)
  kernels = np.resize(augment_jax.BLUR_KERNELS, len(images))
  out = augment_jax.gaussian_blur(images, kernels, sigma=sigma)
  want = np.stack([augment.blur(i, int(k), sigma) for i, k in zip(images, kernels)])
  assert out.dtype == jnp.uint8 and out.shape == images.shape
  exact, max_diff = diff_stats(out, want)
  assert max_diff == 0, (exact, max_diff)


def test_blur_kernel_tables_sum_to_one():
  for sigma in (None, 4.0, 1.5):
    np.testing.assert_array_equal(augment_jax.blur_kernels(sigma).sum(1), 256)


@pytest.mark.skipif(not cv2.ipp.useIPP(), reason='crop_resize models the cubic resize OpenCV '
                    'hands to Intel IPP (its x86 wheels); this OpenCV runs its own code, which '
                    'differs on ~5% of pixels')
@pytest.mark.parametrize('h, w', SIZES)
def test_crop_resize_matches_opencv(h, w):
  """Within 1 level everywhere; exact on at least 99.9% of pixels (measured: 99.99% overall, the
  rest are float32 rounding-order ties against IPP's float code)."""
  images = sample_images(h, w, seed=h + w)
  reps = len(images)
  outs, wants = [], []
  for fraction, split_y, split_x in CROPS:
    params = [np.full(reps, v, np.float32) for v in (fraction, split_y, split_x)]
    outs.append(np.asarray(augment_jax.crop_resize(images, *params)))
    f, a, b = (float(np.float32(v)) for v in (fraction, split_y, split_x))
    wants.append(np.stack([augment.crop(i, f, a, b) for i in images]))
  exact, max_diff = diff_stats(np.stack(outs), np.stack(wants))
  print(f'crop_resize {h}x{w}: exact {exact:.6f}, max diff {max_diff}')
  # The target is IPP's cubic resize (cv2's default here); OpenCV's own code differs on ~5%.
  assert max_diff <= 1 and exact >= 0.999, (exact, max_diff, f'IPP on: {cv2.ipp.useIPP()}')


def test_crop_resize_per_image_parameters():
  """Different crops per image in one call equal the host's image by image."""
  rng = np.random.default_rng(3)
  images = sample_images(64, 64, seed=5)
  fraction = rng.uniform(0.05, 0.2, len(images)).astype(np.float32)
  split_y, split_x = rng.uniform(size=(2, len(images))).astype(np.float32)
  out = augment_jax.crop_resize(images, fraction, split_y, split_x)
  want = np.stack([augment.crop(i, float(f), float(a), float(b))
                   for i, f, a, b in zip(images, fraction, split_y, split_x)])
  exact, max_diff = diff_stats(out, want)
  assert max_diff <= 1 and exact >= 0.999, (exact, max_diff)


def test_floor_mul_is_exact():
  """int(n * float(f)) for float32 f: float32 arithmetic gets 10 * 0.9f wrong (9, not 8)."""
  rng = np.random.default_rng(0)
  f = np.concatenate([rng.uniform(0, 1, 20000), [0.0, 1.0, 0.9, 0.5, 1e-40, 0.2, 0.05]])
  f = f.astype(np.float32)
  n = rng.integers(0, 2048, len(f)).astype(np.int32)
  n[:3] = 10
  got = np.asarray(augment_jax.floor_mul(jnp.asarray(n), jnp.asarray(f)))
  np.testing.assert_array_equal(got, [int(int(a) * float(b)) for a, b in zip(n, f)])


def test_noise_rule_clip_then_truncate():
  """The output is clip(x + std * z, 0, 255) truncated, z the key's standard normals; saturated
  pixels (0 and 255) included."""
  key = jax.random.PRNGKey(7)
  images = np.zeros((4, 32, 32, 3), np.uint8)
  images[:, :, 16:] = 255
  images[:, 8:12] = 128
  std = np.float32([5, 10, 15, 20])
  out = np.asarray(augment_jax.gaussian_noise(images, std, key))
  z = np.asarray(jax.random.normal(key, images.shape, jnp.float32))
  noisy = images.astype(np.float32) + std[:, None, None, None] * z
  np.testing.assert_array_equal(out, np.clip(noisy, 0, 255).astype(np.uint8))
  out, z = out[:, 12:], z[:, 12:]  # the saturated rows
  assert (out[:, :, 16:][z[:, :, 16:] > 0] == 255).all()   # clipped high
  assert (out[:, :, :16][z[:, :, :16] < 0] == 0).all()     # clipped low
  assert ((out[:, :, 16:] < 255) == (z[:, :, 16:] < 0)).all()  # truncated: 254.x -> 254
  assert (out[:, :, 16:][z[:, :, 16:] < 0] <= 254).all()


@pytest.mark.parametrize('std', [5.0, 12.5, 20.0])
def test_noise_distribution_matches_host(std):
  """Mean, std and saturated shares of the host's noise (numpy float64) and the device's (float32
  jax.random), over 196,608 pixels each: mid-grey (no clipping) and saturated (0 and 255)."""
  images = np.full((16, 64, 64, 3), 128, np.uint8)
  images[:, :8] = 0
  images[:, 8:16] = 255
  rng = np.random.default_rng(11)
  host = np.stack([augment.noise(i, std, rng) for i in images]).astype(float)
  device = np.asarray(augment_jax.gaussian_noise(images, np.full(16, std),
                                                 jax.random.PRNGKey(11))).astype(float)
  mid_host, mid_device = host[:, 16:] - 128, device[:, 16:] - 128
  count = mid_host.size
  # truncation: E[floor(128 + std z)] - 128 = -0.5 (to within the discrete-uniform fraction)
  assert abs(mid_device.mean() - mid_host.mean()) < 5 * std * np.sqrt(2 / count)
  assert abs(mid_device.mean() + 0.5) < 5 * std / np.sqrt(count)
  assert abs(mid_device.std() / mid_host.std() - 1) < 0.01
  assert abs(mid_device.std() / np.sqrt(std ** 2 + 1 / 12) - 1) < 0.01
  for rows, value in ((slice(0, 8), 0), (slice(8, 16), 255)):
    share_host = (host[:, rows] == value).mean()
    share_device = (device[:, rows] == value).mean()
    # value 0: z < 1/std keeps 0 (clip, then the truncation of (0, 1)); value 255: z >= 0
    assert abs(share_device - share_host) < 0.01, (value, share_host, share_device)
  # a Kolmogorov-Smirnov distance between the two mid-grey samples
  values = np.arange(-128, 128)
  cdf = lambda x: np.searchsorted(np.sort(x.ravel()), values, side='right') / x.size
  assert np.abs(cdf(mid_host) - cdf(mid_device)).max() < 1.63 * np.sqrt(2 / count)  # alpha 0.01


def test_noise_per_image_keys_do_not_depend_on_the_batch():
  images = sample_images(32, 32)
  std = np.linspace(5, 20, len(images))
  for keys in (jax.random.split(jax.random.PRNGKey(3), len(images)),
               jax.random.split(jax.random.key(3), len(images))):
    whole = np.asarray(augment_jax.gaussian_noise(images, std, keys))
    part = np.asarray(augment_jax.gaussian_noise(images[2:5], std[2:5], keys[2:5]))
    np.testing.assert_array_equal(whole[2:5], part)


def test_traced_parameters_compile_once_per_shape():
  images = sample_images(33, 31)  # shapes no other test uses, so the counts start from none
  other = sample_images(29, 35)
  for fn, draws in ((augment_jax.gaussian_blur, lambda r: (r.choice(augment_jax.BLUR_KERNELS, 8),)),
                    (augment_jax.crop_resize,
                     lambda r: (r.uniform(0.05, 0.2, 8), r.uniform(size=8), r.uniform(size=8))),
                    (augment_jax.gaussian_noise,
                     lambda r: (r.uniform(5, 20, 8), jax.random.PRNGKey(int(r.integers(99)))))):
    rng = np.random.default_rng(0)
    before = fn._cache_size()
    for _ in range(3):
      fn(images, *draws(rng))
    assert fn._cache_size() == before + 1, fn
    fn(other, *draws(rng))
    assert fn._cache_size() == before + 2, fn
