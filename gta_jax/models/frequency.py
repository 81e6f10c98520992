"""Auxiliary frequency inputs for the secondary heads (config.recipe.frequency_inputs).

Each input is a fixed (parameter-free) map of the image on the grid of the primary's middle
features (one cell per 4x4 pixels, 16 channels per input), concatenated with those frozen features
before the heads' first conv. They give a head direct access to the up-sampling traces that
frequency methods read, which the primary, trained for real-vs-fake, may have discarded:
  phase     the phase-only spectrum (SPSL, Liu et al. CVPR 2021): the image rebuilt from the phase
            of its 2-D Fourier transform at unit magnitude, which keeps edges and periodic
            up-sampling patterns and drops content energy. Global: one transform per image.
  highpass  a high-pass residual (FreqNet's idea, Tan et al. AAAI 2024): the image minus its 3x3
            mean, the band where up-sampling leaves its traces.
  dct       the log-magnitude DCT spectrum of every 4x4 block (the release's log-DCT, made local so
            that it lines up with the feature grid and holds at any image size).
All three read the luma of the scaled pixels. Each map is standardised per image over the image's
own pixels (zero mean, unit variance), so no statistics are fitted and the heads see the same
scale at any brightness or size. `highpass` and `dct` are local: an image padded into a batch of
larger ones gets the maps it gets alone. `phase` is global, so images must be scored at their own
size (attribute batches them by exact size: `needs_exact_size`).
"""
import jax
import jax.numpy as jnp

from gta_jax.models import spectral

CELL = 4  # pixels per side of one middle-feature cell (the primary's conv 2 and 4 have stride 2)
CHANNELS_PER_INPUT = CELL * CELL
LOG_EPSILON = 1e-3  # ln(|c| + 1e-3) on [-1, 1] pixels: flat blocks do not dominate the spectrum
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as spectral.greyscale


def _pixel_mask(shape, valid_size):
  """[B, H, W] 1 inside each image's valid rows/cols, 0 in batch padding; None: no padding
  (no mask, rather than a constant one that XLA would spend seconds folding)."""
  if valid_size is None:
    return None
  _, h, w = shape
  rows = jnp.arange(h)[None, :, None] < valid_size[:, 0, None, None]
  cols = jnp.arange(w)[None, None, :] < valid_size[:, 1, None, None]
  return (rows & cols).astype(jnp.float32)


def _pad_to_cells(x: jax.Array) -> jax.Array:
  """[B, H, W, ...] -> zero-padded to multiples of CELL rows and cols (as the convs' SAME padding)."""
  pad_h, pad_w = -x.shape[1] % CELL, -x.shape[2] % CELL
  return jnp.pad(x, [(0, 0), (0, pad_h), (0, pad_w)] + [(0, 0)] * (x.ndim - 3))


def _space_to_depth(x: jax.Array) -> jax.Array:
  """[B, H, W] -> [B, ceil(H/4), ceil(W/4), 16]: each cell's 4x4 pixels as channels (row-major)."""
  x = _pad_to_cells(x)
  b, h, w = x.shape
  cells = x.reshape(b, h // CELL, CELL, w // CELL, CELL).transpose(0, 1, 3, 2, 4)
  return cells.reshape(b, h // CELL, w // CELL, CHANNELS_PER_INPUT)


def _apply(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  return x if mask is None else x * mask


def phase_only(luma: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """[B, H, W] -> [B, H, W]: real(ifft2(exp(i * angle(fft2(luma - mean))))) per image."""
  centred = _apply(luma - _masked_mean(luma, mask)[:, None, None], mask)
  spectrum = jnp.fft.fft2(centred)
  unit = spectrum / jnp.maximum(jnp.abs(spectrum), 1e-30)  # 0 where the magnitude is 0
  return jnp.real(jnp.fft.ifft2(unit)).astype(jnp.float32)


def high_pass_residual(luma: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """[B, H, W] -> [B, H, W]: luma minus its 3x3 mean (zero padding beyond the image)."""
  luma = _apply(luma, mask)
  window_sum = jax.lax.reduce_window(luma, 0.0, jax.lax.add, (1, 3, 3), (1, 1, 1), 'SAME')
  return luma - window_sum / 9.0


def block_dct_log_spectrum(luma: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """[B, H, W] -> [B, ceil(H/4), ceil(W/4), 16]: ln(|2-D DCT| + 1e-3) of each 4x4 block."""
  blocks = _space_to_depth(_apply(luma, mask))
  cells = blocks.reshape(*blocks.shape[:3], CELL, CELL)
  basis = jnp.asarray(spectral.dct_matrix(CELL), jnp.float32)
  hi = jax.lax.Precision.HIGHEST
  coefficients = jnp.einsum('ki,bhwij,lj->bhwkl', basis, cells, basis, precision=hi)
  return jnp.log(jnp.abs(coefficients) + LOG_EPSILON).reshape(*cells.shape[:3], -1)


# name -> (map on pixels [B, H, W] (True) or already on cells [B, h, w, 16] (False), function)
FREQUENCY_INPUTS = {
    'phase': (True, phase_only),
    'highpass': (True, high_pass_residual),
    'dct': (False, block_dct_log_spectrum),
}


def check_names(names, key: str = 'config.recipe.frequency_inputs') -> tuple[str, ...]:
  """-> the names as a tuple; an unknown or repeated name is refused, naming `key`."""
  names = tuple(names)
  unknown = [n for n in names if n not in FREQUENCY_INPUTS]
  if unknown or len(set(names)) != len(names):
    raise ValueError(f'{key}={names!r}: each of {", ".join(FREQUENCY_INPUTS)} at most once '
                     f'(unknown: {unknown or "none"}).')
  return names


def num_channels(names) -> int:
  return CHANNELS_PER_INPUT * len(tuple(names))


def needs_exact_size(names) -> bool:
  """Whether an image must be scored at its own size (not zero-padded into a larger batch)."""
  return 'phase' in tuple(names)


def _masked_mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  axes = tuple(range(1, x.ndim))
  if mask is None:
    return x.mean(axes)
  return (x * mask).sum(axes) / jnp.maximum(mask.sum(axes), 1.0)


def _standardise(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Per image: zero mean and unit variance over the valid cells, zero in padding."""
  mask = None if mask is None else jnp.broadcast_to(mask, x.shape)
  mean = _masked_mean(x, mask)
  centred = _apply(x - mean.reshape(-1, *[1] * (x.ndim - 1)), mask)
  std = jnp.sqrt(_masked_mean(jnp.square(centred), mask))
  return centred / jnp.maximum(std, 1e-6).reshape(-1, *[1] * (x.ndim - 1))


def frequency_features(scaled_pixels: jax.Array, names, valid_size=None) -> jax.Array:
  """[B, H, W, 3] pixels in [-1, 1] -> [B, ceil(H/4), ceil(W/4), 16 * len(names)] standardised maps.

  valid_size: [B, 2] rows, cols of each image in a zero-padded batch (see models.Primary).
  """
  names = tuple(names)
  if not names:
    raise ValueError('frequency_features needs at least one input name')
  luma = jnp.einsum('bhwc,c->bhw', scaled_pixels.astype(jnp.float32), jnp.asarray(_LUMA))
  if valid_size is None and (luma.shape[1] % CELL or luma.shape[2] % CELL):
    # the cells padded to a multiple of 4 px must not count in the standardisation
    valid_size = jnp.broadcast_to(jnp.asarray(luma.shape[1:]), (luma.shape[0], 2))
  pixel_mask = _pixel_mask(luma.shape, valid_size)
  pixels_per_cell = cell_mask = None
  if pixel_mask is not None:
    pixels_per_cell = _space_to_depth(pixel_mask)  # [B, h, w, 16]
    cell_mask = pixels_per_cell.max(axis=-1, keepdims=True)  # a cell with any image pixel
  maps = []
  for name in names:
    on_pixels, transform = FREQUENCY_INPUTS[name]
    if on_pixels:
      maps.append(_standardise(_space_to_depth(transform(luma, pixel_mask)), pixels_per_cell))
    else:
      maps.append(_standardise(transform(luma, pixel_mask), cell_mask))
  return jnp.concatenate(maps, axis=-1)
