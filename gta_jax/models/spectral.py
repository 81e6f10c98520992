"""Input preprocessing: pixel scaling and the release's log-DCT spectrum, plus its statistics.

The JAX functions are pure and jit-able so the DCT runs on the accelerator inside the input step.
`DctStats` accumulates per-coefficient mean and population std over a split with Welford's
algorithm (Chan et al.'s batched merge) in float64 on the host, as the release does.
"""
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

LOG_EPSILON = 1e-12  # ln(|x| + 1e-12), as the release's data_prep and DCTLayer


def scale_pixels(images: jax.Array) -> jax.Array:
  """[..., H, W, 3] uint8 -> float32 in [-1, 1] (x / 127.5 - 1, the release's `scale_image`)."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def greyscale(images: jax.Array) -> jax.Array:
  """[..., H, W, 3] uint8 -> [..., H, W] uint8 luma, bit-identical to PIL's `convert('L')`.

  ITU-R 601-2 (299/587/114) in PIL's 16-bit fixed point with round-half-up.
  """
  rgb = images.astype(jnp.int32)
  luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
  return luma.astype(jnp.uint8)


@functools.lru_cache(maxsize=8)
def dct_matrix(n: int) -> np.ndarray:
  """[n, n] orthonormal DCT-II matrix D, so that D @ x == scipy.fft.dct(x, norm='ortho')."""
  k = np.arange(n)[:, None]
  i = np.arange(n)[None, :]
  d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
  d[0] /= np.sqrt(2.0)
  return d


def dct2(x: jax.Array) -> jax.Array:
  """Orthonormal 2-D DCT-II over the last two axes ([..., H, W] float32).

  Two matmuls at full float32 precision: exact, and fast on every backend.
  """
  dh = jnp.asarray(dct_matrix(x.shape[-2]), jnp.float32)
  dw = jnp.asarray(dct_matrix(x.shape[-1]), jnp.float32)
  hi = jax.lax.Precision.HIGHEST
  rows = jnp.einsum('kh,...hw->...kw', dh, x, precision=hi)
  return jnp.einsum('...kw,lw->...kl', rows, dw, precision=hi)


def log_dct(images: jax.Array) -> jax.Array:
  """[..., H, W, 3] uint8 RGB -> [..., H, W] float32 ln(|DCT(grey)| + 1e-12) on 0-255 values."""
  grey = greyscale(images).astype(jnp.float32)
  return jnp.log(jnp.abs(dct2(grey)) + LOG_EPSILON)


def dct_features(images: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
  """[B, H, W, 3] uint8 -> [B, H, W, 1] float32 z-scored log-DCT, the DCT models' input."""
  return ((log_dct(images) - mean) / std)[..., None]


def log_dct_numpy(images: np.ndarray) -> np.ndarray:
  """Float64 host twin of `log_dct` for statistics and exact-parity checks ([..., H, W, 3] uint8)."""
  rgb = images.astype(np.int64)
  grey = ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16)
  grey = grey.astype(np.float64)
  dh, dw = dct_matrix(grey.shape[-2]), dct_matrix(grey.shape[-1])
  return np.log(np.abs(dh @ grey @ dw.T) + LOG_EPSILON)


class DctStats:
  """Per-coefficient mean and population std of the log-DCT, accumulated with Welford/Chan."""

  def __init__(self, shape=None, mean=None, std=None, count: int = 0):
    self.count = count
    self.mean = None if mean is None else np.asarray(mean, np.float64)
    self._m2 = None if std is None else np.square(np.asarray(std, np.float64)) * max(count, 1)
    if shape is not None and self.mean is None:
      self.mean, self._m2 = np.zeros(shape), np.zeros(shape)

  def update(self, log_spectra: np.ndarray) -> None:
    """Adds a batch of log-DCT spectra [B, H, W] (float64)."""
    batch = np.asarray(log_spectra, np.float64)
    n_b = batch.shape[0]
    if n_b == 0:
      return
    mean_b = batch.mean(axis=0)
    m2_b = np.square(batch - mean_b).sum(axis=0)
    if self.mean is None:
      self.mean, self._m2 = np.zeros_like(mean_b), np.zeros_like(mean_b)
    total = self.count + n_b
    delta = mean_b - self.mean
    self.mean = self.mean + delta * (n_b / total)
    self._m2 = self._m2 + m2_b + np.square(delta) * (self.count * n_b / total)
    self.count = total

  @property
  def variance(self) -> np.ndarray:
    return self._m2 / self.count  # population variance, as the release (M2 / count)

  @property
  def std(self) -> np.ndarray:
    return np.sqrt(self.variance)

  def save(self, directory) -> None:
    """Writes mean.npy, std_dev.npy, variance.npy: the release's layout."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / 'mean.npy', self.mean)
    np.save(directory / 'std_dev.npy', self.std)
    np.save(directory / 'variance.npy', self.variance)


def load_dct_stats(directory) -> tuple[np.ndarray, np.ndarray]:
  """Reads (mean, std) [H, W] float64 from a folder in the release's layout (mean.npy, std_dev.npy)."""
  directory = pathlib.Path(directory)
  missing = [n for n in ('mean.npy', 'std_dev.npy') if not (directory / n).is_file()]
  if missing:
    raise FileNotFoundError(
        f'DCT statistics folder {directory} lacks {", ".join(missing)}; expected the release '
        'layout (mean.npy, std_dev.npy), e.g. dataset/statistics/ganfp/dctnorm from the authors.')
  arrays = []
  for name in ('mean.npy', 'std_dev.npy'):
    try:
      arrays.append(np.asarray(np.load(directory / name), np.float64))
    except (OSError, ValueError, TypeError) as e:
      raise ValueError(f'{directory / name}: not a numeric .npy array ({e}).') from None
  mean, std = arrays
  if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
    raise ValueError(f'{directory}: mean.npy or std_dev.npy holds NaN or infinite values.')
  if mean.shape != std.shape or mean.ndim != 2:
    raise ValueError(f'{directory}: mean.npy {mean.shape} and std_dev.npy {std.shape} must be '
                     'equal [H, W] arrays.')
  if np.any(std <= 0):
    raise ValueError(f'{directory}/std_dev.npy has non-positive entries.')
  return mean, std


def preprocess(images: jax.Array, input_kind: str, constants: dict) -> jax.Array:
  """[B, H, W, 3] uint8 -> model input, on the device inside the step (pixels or log-DCT z-score)."""
  if input_kind == 'dct':
    return dct_features(images, constants['dct_mean'], constants['dct_std'])
  return scale_pixels(images)
