"""The blur, crop-and-resize and noise perturbations of `augment.py` in JAX, batched and jit-able.

Each function takes uint8 [N, H, W, C] and one parameter per image as an array (traced: one
compilation per image shape serves every draw), and reproduces what the host function does with
the OpenCV build this project installs (opencv-python-headless 5.0, IPP on, as by default):

  gaussian_blur  cv2.GaussianBlur on 8U is OpenCV's fixed-point path (smooth.dispatch.cpp
                 getGaussianKernelBitExact -> getGaussianKernelFixedPoint_ED, ufixedpoint16): the
                 kernel in 1/256 units (sigma 0, k = 3/5/7/9: the fixed tables 1-2-1 ... 4-13-30-51-
                 60 /256; sigma > 0: OpenCV's Gaussian quantised with its error diffusion), a row
                 pass exact in 1/256 units, a column pass exact in 1/65536 units, then
                 (sum + 2^15) >> 16. All integer, so the JAX version is int32 and bit-exact.
                 BORDER_REFLECT_101 is jnp.pad's 'reflect'. A per-image kernel size is a 9-tap
                 kernel with zeros outside the image's k taps: zero taps add exactly nothing.
  crop_resize    cv2.resize(..., INTER_CUBIC) on 8U goes to IPP's cubic resize (OpenCV's IPP HAL),
                 not OpenCV's own fixed-point code (INTER_RESIZE_COEF_BITS 11, a float vertical
                 pass: that one agrees with IPP on ~95% of pixels only). Measured against it, IPP is
                 float32 throughout: OpenCV's source mapping fx = (dx + 0.5) * (src / dst) - 0.5,
                 Keys' cubic with a = -0.75 in float32 on the fractional part, indices clamped to
                 the source (cropped) image, a horizontal pass then a vertical pass in float32
                 with no rounding between them, round half to even, saturate. Taps and weights
                 depend only on (source size, destination size), so they are tabulated on the host
                 for every source size 1..H (1..W) and looked up by the traced crop size; indices
                 are clamped to the crop box and offset into the original image: no dynamic shape.
  gaussian_noise float32 N(0, std^2) from jax.random, added, clipped to [0, 255], truncated, as
                 `augment.noise` does in float64 with numpy's generator: equal in distribution.

Crop geometry as `augment.crop`: cut = floor(size * fraction), first = floor(cut * split), exact
in integers (floor_mul) for sizes below 2048; the parameters are float32, so host parity holds for
the host function given the same values (float64(float32(fraction)) cuts the same rows).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

BLUR_KERNELS = (3, 5, 7, 9)
_SMALL_GAUSSIAN = {  # getGaussianKernelBitExact's fixed tables for sigma <= 0, in 1/256 units
    3: (64, 128, 64),
    5: (16, 64, 96, 64, 16),
    7: (8, 28, 56, 72, 56, 28, 8),
    9: (4, 13, 30, 51, 60, 51, 30, 13, 4),
}


def _gaussian_fixed(k: int, sigma: float) -> tuple[int, ...]:
  """OpenCV's 8U Gaussian kernel in 1/256 units: the fixed tables for sigma <= 0, else
  getGaussianKernelBitExact (doubles) quantised by getGaussianKernelFixedPoint_ED (cvRound with
  error diffusion from the tails in, the centre taking what is left of 256)."""
  if sigma <= 0:
    return _SMALL_GAUSSIAN[k]
  scale2 = -0.125 / (sigma * sigma)
  half = (k - 1) // 2
  values = [math.exp(float(x * x) * scale2) for x in range(1 - k, 0, 2)]
  total = 2 * sum(values) + 1.0
  weights = [v * (1.0 / total) for v in values]
  fixed, err = [], 0.0
  for w in weights:
    adj = w * 256.0 + err
    v = round(adj)  # cvRound: half to even, as Python's round
    err = adj - v
    fixed.append(v)
  centre = 256 - 2 * sum(fixed)
  assert len(fixed) == half
  return tuple(fixed) + (centre,) + tuple(reversed(fixed))


def blur_kernels(sigma: float | None = None) -> np.ndarray:
  """[4, 9] int32: for k = 3, 5, 7, 9 OpenCV's fixed-point kernel, centred, zeros outside."""
  table = np.zeros((len(BLUR_KERNELS), 9), np.int32)
  for i, k in enumerate(BLUR_KERNELS):
    pad = (9 - k) // 2
    table[i, pad:pad + k] = _gaussian_fixed(k, 0.0 if sigma is None else sigma)
  return table


def _separable_fixed(images, taps):
  """OpenCV's 8U fixed-point separable filter: uint8 [N, H, W, C], taps int [N, T] (T odd, 1/256
  units, summing to 256), mirrored at the border (BORDER_REFLECT_101): a row pass exact in 1/256
  units, a column pass exact in 1/65536 units, then (sum + 2^15) >> 16. All int32: exact."""
  _, h, w, _ = images.shape
  size = taps.shape[1]
  pad = size // 2
  x = jnp.pad(images.astype(jnp.int32), ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')
  t = taps[:, None, None, None, :]
  rows = sum(t[..., j] * x[:, :, j:j + w] for j in range(size))     # [N, H + 2 pad, W, C], x 256
  out = sum(t[..., j] * rows[:, j:j + h] for j in range(size))      # [N, H, W, C], x 65536
  return jnp.right_shift(out + (1 << 15), 16).astype(jnp.uint8)     # <= 255 * 65536: no clip


@functools.partial(jax.jit, static_argnames='sigma')
def gaussian_blur(images, kernel, sigma: float | None = None):
  """`augment.blur` per image: uint8 [N, H, W, C], kernel int [N] (or a scalar) from {3, 5, 7, 9}.

  sigma None is OpenCV's automatic sigma (what training uses); a number (the release's 4.0) is
  static. Bit-exact to cv2.GaussianBlur for H, W >= 9 (jnp.pad's reflection repeats differently
  from OpenCV's only when the image is narrower than the 8-pixel margin)."""
  n = images.shape[0]
  index = (jnp.broadcast_to(jnp.asarray(kernel, jnp.int32), (n,)) - 3) // 2
  # As 17-tap kernels (zeros outside): measured 2.5x faster than 9 taps in XLA's CPU code (the
  # padded rows then vectorise better); zero taps add exactly nothing.
  taps = np.pad(blur_kernels(sigma), ((0, 0), (4, 4)))
  return _separable_fixed(images, jnp.asarray(taps)[index])


SOFTEN_MAX_KERNEL = 17  # OpenCV's 8U kernel size for sigma 2.5, the top of augment.SOFTENING_SIGMA


def sigma_kernel_size(sigma):
  """OpenCV's kernel size for an 8U Gaussian of `sigma` (ksize 0): cvRound(sigma * 6 + 1) | 1."""
  return jnp.bitwise_or(jnp.round(sigma * 6 + 1).astype(jnp.int32), 1)


def sigma_taps(sigma, size: int = SOFTEN_MAX_KERNEL):
  """[N] float sigma -> [N, size] int32: `_gaussian_fixed(sigma_kernel_size(s), s)` per image,
  centred, zeros outside its taps, in float32 (OpenCV: doubles; the error diffusion's rounding can
  differ where a tap lands within float32's error of a half, tested to be rare and 1 level)."""
  sigma = jnp.asarray(sigma, jnp.float32)
  half_max = size // 2
  half = (sigma_kernel_size(sigma) - 1) // 2                        # [N]
  distance = jnp.arange(half_max, 0, -1, dtype=jnp.float32)         # tails in: half_max .. 1
  valid = distance[None, :] <= half[:, None]
  values = jnp.where(valid, jnp.exp(-0.5 * (distance[None, :] / sigma[:, None]) ** 2), 0.0)
  weights = values / (2 * values.sum(1, keepdims=True) + 1.0)

  def diffuse(err, w):                                              # cvRound with error diffusion
    adj = w * 256.0 + err
    v = jnp.round(adj)
    return adj - v, v
  _, fixed = jax.lax.scan(diffuse, jnp.zeros_like(sigma), weights.T)
  fixed = fixed.T.astype(jnp.int32)                                 # [N, half_max]
  centre = 256 - 2 * fixed.sum(1, keepdims=True)
  return jnp.concatenate([fixed, centre, fixed[:, ::-1]], axis=1)


@jax.jit
def soften(images, sigma):
  """`augment.gaussian_blur(image, sigma)` per image (the real-class softening): an 8U Gaussian of
  `sigma` [N] px with OpenCV's kernel size, mirrored at the border. Images at least 9 px a side."""
  n = images.shape[0]
  return _separable_fixed(images, sigma_taps(jnp.broadcast_to(jnp.asarray(sigma, jnp.float32),
                                                              (n,))))


@jax.jit
def photometric_jitter(images, saturation, contrast, brightness, gamma):
  """`augment.photometric_jitter` per image with its drawn factors (float [N] each; saturation 0
  for the grey draws), in float32 as the host: grey = RGB . (0.299, 0.587, 0.114), saturation about
  it, contrast about the image's mean, brightness, clip, gamma, round half to even, clip. The mean
  is taken from the image's exact integer channel sums (the saturation is linear, so the mean of
  the saturated image is grey mean + saturation (mean - grey mean)): no float sum whose order
  depends on the batch's shape or the compiler, so an image's result does not depend on its batch.
  numpy sums in float32 and its pow rounds differently from exp(gamma log x): within 1 level of
  the host."""
  per = lambda v: jnp.asarray(v, jnp.float32)[:, None, None, None]
  weights = jnp.array([0.299, 0.587, 0.114], jnp.float32)
  pixels = images.astype(jnp.float32)
  # Written out, not a reduction over the 3-wide channel axis (4.8x slower in XLA's CPU code).
  grey = (pixels[..., :1] * weights[0] + pixels[..., 1:2] * weights[1]) + pixels[..., 2:] * weights[2]
  pixels = grey + per(saturation) * (pixels - grey)
  count = images.shape[1] * images.shape[2]
  channel = images.astype(jnp.int32).sum(axis=(1, 2)).astype(jnp.float32) / count   # [N, C]
  grey_mean = (channel * weights).sum(-1)
  mean = per(grey_mean + jnp.asarray(saturation, jnp.float32) * (channel.mean(-1) - grey_mean))
  pixels = mean + per(contrast) * (pixels - mean) + per(brightness)
  # x ** gamma as exp(gamma log x) (what pow computes; XLA's CPU pow is 3.3x slower); x = 0 gives
  # exp(-inf) = 0 as pow does.
  pixels = 255.0 * jnp.exp(per(gamma) * jnp.log(jnp.clip(pixels, 0.0, 255.0) / 255.0))
  return jnp.clip(jnp.rint(pixels), 0, 255).astype(jnp.uint8)


def cubic_table(size: int) -> tuple[np.ndarray, np.ndarray]:
  """Taps for resizing every source size s = 1..size to `size` as IPP/OpenCV INTER_CUBIC does:
  (first tap [size, size] int32, weights [size, size, 4] float32), row s - 1 for source size s.
  The first tap sx = floor(fx) - 1 may lie outside [0, s - 1]; the caller clamps."""
  first = np.zeros((size, size), np.int32)
  weights = np.zeros((size, size, 4), np.float32)
  f32 = np.float32
  a = f32(-0.75)
  dx = np.arange(size, dtype=np.float64)
  for s in range(1, size + 1):
    fx = ((dx + 0.5) * (1.0 / (size / s)) - 0.5).astype(f32)  # resize.cpp: scale = 1 / inv_scale
    sx = np.floor(fx)
    x = fx - sx
    x1, y = x + f32(1), f32(1) - x
    c0 = ((a * x1 - f32(5) * a) * x1 + f32(8) * a) * x1 - f32(4) * a
    c1 = ((a + f32(2)) * x - (a + f32(3))) * x * x + f32(1)
    c2 = ((a + f32(2)) * y - (a + f32(3))) * y * y + f32(1)
    c3 = f32(1) - c0 - c1 - c2
    first[s - 1] = sx.astype(np.int32) - 1
    weights[s - 1] = np.stack([c0, c1, c2, c3], -1)
  return first, weights


def _weighted4(g, w):
  """((g0 w0 + g1 w1) + g2 w2) + g3 w3 over the leading tap axis, in this order (float32)."""
  p = [g[k] * w[k] for k in range(4)]
  return ((p[0] + p[1]) + p[2]) + p[3]


def floor_mul(n, f):
  """floor(n * f) exactly, as Python's int(n * float(f)), for int32 0 <= n < 2048 and float32
  0 <= f <= 1: float32 n * f rounds (10 * 0.9f is 9.0f though 0.9f < 0.9), so the product is
  taken in integers, f = M 2^(E - 23) with its 24-bit mantissa split in two 12-bit halves."""
  bits = jax.lax.bitcast_convert_type(f.astype(jnp.float32), jnp.int32)
  mantissa = (bits & 0x7FFFFF) | 0x800000
  shift = 23 - ((bits >> 23) - 127)                                   # >= 23 for f <= 1
  high = n * (mantissa >> 12)                                         # < 2^23
  low = jnp.right_shift(n * (mantissa & 0xFFF), 12)
  return jnp.right_shift(high + low, jnp.minimum(shift - 12, 31))    # f = 0: shift 31 -> 0


def crop_geometry(size: int, fraction, split):
  """(kept length, first kept index) as augment.crop: int(size * fraction), int(cut * split)."""
  cut = floor_mul(jnp.int32(size), fraction)
  return size - cut, floor_mul(cut, split)


def _taps(size, fraction, split):
  """Per image: clamped source indices into the original axis [N, size, 4], weights [N, size, 4]."""
  first_tap, weights = (jnp.asarray(t) for t in cubic_table(size))
  kept, first = crop_geometry(size, fraction, split)
  sx = first_tap[kept - 1]                                            # [N, size]
  index = jnp.clip(sx[..., None] + jnp.arange(4), 0, (kept - 1)[:, None, None])
  return index + first[:, None, None], weights[kept - 1]


@jax.jit
def crop_resize(images, fraction, split_y, split_x):
  """`augment.crop` per image: uint8 [N, H, W, C]; fraction, split_y, split_x float [N] (or
  scalars). The cropped image is never formed: its cubic resample back to H x W reads the original
  with indices clamped to the crop box."""
  n, h, w, c = images.shape
  per_image = lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (n,))
  fraction, split_y, split_x = per_image(fraction), per_image(split_y), per_image(split_x)
  iy, wy = _taps(h, fraction, split_y)                                # [N, H, 4]
  ix, wx = _taps(w, fraction, split_x)                                # [N, W, 4]
  x = images.astype(jnp.float32)
  # horizontal: [N, H, W, C] -> gather columns [N, H, W_out, 4, C]
  g = jax.vmap(lambda im, idx: im[:, idx])(x, ix)
  g = jnp.moveaxis(g, 3, 0)                                           # [4, N, H, W, C]
  horizontal = _weighted4(g, jnp.moveaxis(wx, 2, 0)[:, :, None, :, None])
  # vertical: gather rows [N, H_out, 4, W, C]
  g = jax.vmap(lambda im, idx: im[idx])(horizontal, iy)
  g = jnp.moveaxis(g, 2, 0)                                           # [4, N, H, W, C]
  vertical = _weighted4(g, jnp.moveaxis(wy, 2, 0)[:, :, :, None, None])
  return jnp.clip(jnp.rint(vertical), 0, 255).astype(jnp.uint8)


@jax.jit
def gaussian_noise(images, std, key):
  """`augment.noise` per image: uint8 [N, H, W, C] + std [N] (or a scalar) x N(0, 1), clipped to
  [0, 255] and truncated to uint8. `key`: one PRNG key for the batch, or one per image ([N] typed
  keys or [N, 2] raw ones), so an image's noise does not depend on what else is in its batch."""
  n = images.shape[0]
  std = jnp.broadcast_to(jnp.asarray(std, jnp.float32), (n,))[:, None, None, None]
  typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
  if key.ndim == (1 if typed else 2):
    z = jax.vmap(lambda k: jax.random.normal(k, images.shape[1:], jnp.float32))(key)
  else:
    z = jax.random.normal(key, images.shape, jnp.float32)
  noisy = images.astype(jnp.float32) + std * z
  return jnp.clip(noisy, 0, 255).astype(jnp.uint8)
