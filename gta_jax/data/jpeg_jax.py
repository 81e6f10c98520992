"""A JPEG round trip in JAX integer arithmetic that equals PIL's (libjpeg-turbo's) bit for bit.

`jpeg_roundtrip(images, quality)` is what `augment.jpeg` does (PIL `save(..., 'JPEG',
quality=q)` with its defaults, then decode to RGB) for a batch, in `jnp.int32` arithmetic, jit-able,
quality a scalar or one per image (traced or not); [N, H, W, 1] is PIL's greyscale ('L') JPEG.
The codec path has no floats: every step is libjpeg-turbo's own integer code (read from its
sources, src/ as of 3.x), in order:

  encode  jccolor.c   RGB -> YCbCr, SCALEBITS 16 fixed point, the 0.5-epsilon Cb/Cr fudge
          jcprepct.c  bottom edge: the last image row repeated to an even row count before
                      downsampling; the last *downsampled* row repeated to whole iMCU rows after
          jcsample.c  right edge: the full-size row repeated to 2 x the chroma blocks' width
                      (expand_right_edge), h2v2_downsample with the bias 1, 2, 1, 2 per column
          jcdctmgr.c  samples - 128; jfdctint.c islow FDCT (CONST_BITS 13, PASS1_BITS 2, output
                      x8); quantize: libjpeg-turbo's reciprocal multiply (compute_reciprocal),
                      |x| -> ((|x| + c) * recip) >> r, sign restored
  decode  jidctint.c  dequantise, islow IDCT; range limit (see _range_limit)
          jdsample.c  h2v2_fancy_upsample (triangular 9/3/3/1, biases 8 and 7), the edge columns
                      and the context rows above the first and below the last real chroma row
                      repeated (jdmainct.c); h2v2_upsample (plain replication) where the chroma is
                      at most 2 samples wide, as jinit_upsampler chooses
          jdcolor.c   YCbCr -> RGB with the Cr_r / Cb_b / Cr_g / Cb_g tables, range limit

Quality is IJG's scaling of the standard tables (jcparam.c, force_baseline: 1..255), quality
clipped to 1..100 as jpeg_quality_scaling does. PIL's defaults are baseline, 4:2:0, islow, no
smoothing, fancy upsampling; entropy coding is lossless and skipped.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gta_jax.data.containers import ijg_tables

# ---- constant tables ---------------------------------------------------------------------------

SCALEBITS = 16
ONE_HALF = 1 << (SCALEBITS - 1)


def _fix16(x: float) -> int:
  return int(x * (1 << SCALEBITS) + 0.5)


def _reciprocal(divisor: int) -> tuple[int, int, int]:
  """jcdctmgr.c compute_reciprocal for 16-bit DCTELEM: (recip, correction, total shift r)."""
  if divisor <= 1:
    return 1, 0, 0
  b = divisor.bit_length() - 1
  r = 16 + b
  fq, fr = divmod(1 << r, divisor)
  c = divisor // 2
  if fr == 0:
    fq >>= 1
    r -= 1
  elif fr <= divisor // 2:
    c += 1
  else:
    fq += 1
  return fq, c, r


def _quant_constants() -> dict[str, np.ndarray]:
  """[101, 2, 8, 8] int32 tables per quality (index 0 is quality 1's): the quantisation table the
  decoder multiplies by, and the encoder's reciprocal, correction and shift for qtable << 3."""
  qt = np.zeros((101, 2, 64), np.int32)
  for q in range(101):
    qt[q] = np.stack(ijg_tables(max(q, 1)))
  recip = np.zeros_like(qt)
  corr = np.zeros_like(qt)
  shift = np.zeros_like(qt)
  for idx in np.ndindex(qt.shape):
    recip[idx], corr[idx], shift[idx] = _reciprocal(int(qt[idx]) << 3)
  shape = (101, 2, 8, 8)
  return {'qt': qt.reshape(shape), 'recip': recip.reshape(shape),
          'corr': corr.reshape(shape), 'shift': shift.reshape(shape)}


_TABLES = _quant_constants()

# jfdctint.c / jidctint.c constants (CONST_BITS 13)
CONST_BITS = 13
PASS1_BITS = 2
F_0_298 = 2446
F_0_390 = 3196
F_0_541 = 4433
F_0_765 = 6270
F_0_899 = 7373
F_1_175 = 9633
F_1_501 = 12299
F_1_847 = 15137
F_1_961 = 16069
F_2_053 = 16819
F_2_562 = 20995
F_3_072 = 25172


def _descale(x, n):
  return jnp.right_shift(x + (1 << (n - 1)), n)


# ---- colour conversion --------------------------------------------------------------------------

def _rgb_to_ycc(rgb):
  """jccolor.c rgb_ycc_convert: [..., 3] int32 -> Y, Cb, Cr int32."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  cbcr_offset = 128 << SCALEBITS
  y = (_fix16(0.29900) * r + _fix16(0.58700) * g + _fix16(0.11400) * b + ONE_HALF) >> SCALEBITS
  cb = (-_fix16(0.16874) * r - _fix16(0.33126) * g + _fix16(0.50000) * b
        + cbcr_offset + ONE_HALF - 1) >> SCALEBITS
  cr = (_fix16(0.50000) * r - _fix16(0.41869) * g - _fix16(0.08131) * b
        + cbcr_offset + ONE_HALF - 1) >> SCALEBITS
  return y, cb, cr


def _ycc_to_rgb(y, cb, cr):
  """jdcolor.c ycc_rgb_convert with build_ycc_rgb_table's tables (as arithmetic), range limited."""
  x_cb = cb - 128
  x_cr = cr - 128
  cr_r = jnp.right_shift(_fix16(1.40200) * x_cr + ONE_HALF, SCALEBITS)
  cb_b = jnp.right_shift(_fix16(1.77200) * x_cb + ONE_HALF, SCALEBITS)
  cr_g = -_fix16(0.71414) * x_cr
  cb_g = -_fix16(0.34414) * x_cb + ONE_HALF
  r = y + cr_r
  g = y + jnp.right_shift(cb_g + cr_g, SCALEBITS)
  b = y + cb_b
  return jnp.clip(jnp.stack([r, g, b], axis=-1), 0, 255)


# ---- sampling -----------------------------------------------------------------------------------

def _pad_edge(x, rows, cols):
  """Repeat the last row / column of [N, h, w] up to [N, rows, cols] (no-op where already there)."""
  h, w = x.shape[-2:]
  return jnp.pad(x, ((0, 0), (0, rows - h), (0, cols - w)), mode='edge')


def _h2v2_downsample(x):
  """jcsample.c h2v2_downsample: [N, 2h, 2w] -> [N, h, w], bias 1, 2, 1, 2 along each row."""
  n, h2, w2 = x.shape
  s = x.reshape(n, h2 // 2, 2, w2 // 2, 2).sum(axis=(2, 4))
  bias = jnp.asarray(np.tile([1, 2], w2 // 4 + 1)[:w2 // 2], jnp.int32)
  return jnp.right_shift(s + bias, 2)


def _h2v2_fancy_upsample(c):
  """jdsample.c h2v2_fancy_upsample on the real chroma [N, h, w] (w > 2) -> [N, 2h, 2w]: the row
  above the first and below the last are the edge rows themselves (jdmainct.c context pointers),
  and the column sums beyond either end are the edge columns' (the special first/last column
  cases are the general formula on a repeated edge)."""
  p = jnp.pad(c, ((0, 0), (1, 1), (0, 0)), mode='edge')
  above = 3 * p[:, 1:-1] + p[:, :-2]   # output row 2i: nearer row i, next nearest i - 1
  below = 3 * p[:, 1:-1] + p[:, 2:]    # output row 2i + 1: next nearest i + 1
  rows = jnp.stack([above, below], axis=2).reshape(c.shape[0], 2 * c.shape[1], c.shape[2])
  q = jnp.pad(rows, ((0, 0), (0, 0), (1, 1)), mode='edge')
  left = jnp.right_shift(3 * q[..., 1:-1] + q[..., :-2] + 8, 4)
  right = jnp.right_shift(3 * q[..., 1:-1] + q[..., 2:] + 7, 4)
  return jnp.stack([left, right], axis=-1).reshape(rows.shape[0], rows.shape[1], 2 * c.shape[2])


def _h2v2_upsample(c):
  """jdsample.c h2v2_upsample: each chroma sample repeated 2 x 2."""
  return jnp.repeat(jnp.repeat(c, 2, axis=1), 2, axis=2)


# ---- DCT ----------------------------------------------------------------------------------------

def _blocks(x):
  """[N, 8a, 8b] -> [8 (y), 8 (x), N, a, b]: the in-block axes lead, so each butterfly term below
  is one contiguous slab (XLA's CPU code vectorises it; [..., 8] slices did not)."""
  n, h, w = x.shape
  return x.reshape(n, h // 8, 8, w // 8, 8).transpose(2, 4, 0, 1, 3)


def _unblocks(x):
  n, a, b = x.shape[2:]
  return x.transpose(2, 3, 0, 4, 1).reshape(n, a * 8, b * 8)


def _fdct_pass(d, first):
  """One pass of jfdctint.c jpeg_fdct_islow over the 8 arrays d[0..7] (pass 1: along each row,
  else along each column); returns the 8 outputs."""
  tmp0 = d[0] + d[7]
  tmp7 = d[0] - d[7]
  tmp1 = d[1] + d[6]
  tmp6 = d[1] - d[6]
  tmp2 = d[2] + d[5]
  tmp5 = d[2] - d[5]
  tmp3 = d[3] + d[4]
  tmp4 = d[3] - d[4]

  tmp10 = tmp0 + tmp3
  tmp13 = tmp0 - tmp3
  tmp11 = tmp1 + tmp2
  tmp12 = tmp1 - tmp2

  if first:
    out0 = jnp.left_shift(tmp10 + tmp11, PASS1_BITS)
    out4 = jnp.left_shift(tmp10 - tmp11, PASS1_BITS)
    shift = CONST_BITS - PASS1_BITS
  else:
    out0 = _descale(tmp10 + tmp11, PASS1_BITS)
    out4 = _descale(tmp10 - tmp11, PASS1_BITS)
    shift = CONST_BITS + PASS1_BITS

  z1 = (tmp12 + tmp13) * F_0_541
  out2 = _descale(z1 + tmp13 * F_0_765, shift)
  out6 = _descale(z1 + tmp12 * -F_1_847, shift)

  out7, out5, out3, out1 = (_descale(o, shift) for o in _odd_part(tmp4, tmp5, tmp6, tmp7))
  return [out0, out1, out2, out3, out4, out5, out6, out7]


def _odd_part(a, b, c, d):
  """The odd-part rotation jfdctint.c and jidctint.c share (their tmp4..tmp7 / tmp0..tmp3, in
  that order), before descaling: the same constants, products and sums as the C."""
  z1, z2, z3, z4 = a + d, b + c, a + c, b + d
  z5 = (z3 + z4) * F_1_175
  a, b, c, d = a * F_0_298, b * F_2_053, c * F_3_072, d * F_1_501
  z1, z2 = z1 * -F_0_899, z2 * -F_2_562
  z3, z4 = z3 * -F_1_961 + z5, z4 * -F_0_390 + z5
  return a + z1 + z3, b + z2 + z4, c + z2 + z3, d + z1 + z4


def _fdct(blocks):
  """[8 (y), 8 (x), ...] samples - 128 -> coefficients x 8, [8 (v), 8 (u), ...] (natural order)."""
  rows = jnp.stack(_fdct_pass([blocks[:, x] for x in range(8)], True), axis=1)   # along x
  return jnp.stack(_fdct_pass([rows[y] for y in range(8)], False), axis=0)       # along y


def _idct_pass(d, first):
  """One pass of jidctint.c jpeg_idct_islow over the 8 arrays d[0..7] (pass 1: along each column
  of dequantised coefficients, else along each row of the workspace). The C's shortcuts for
  all-zero AC columns / rows give the same values as the general path, so there are none here."""
  z2 = d[2]
  z3 = d[6]
  z1 = (z2 + z3) * F_0_541
  tmp2 = z1 + z3 * -F_1_847
  tmp3 = z1 + z2 * F_0_765
  tmp0 = jnp.left_shift(d[0] + d[4], CONST_BITS)
  tmp1 = jnp.left_shift(d[0] - d[4], CONST_BITS)

  tmp10 = tmp0 + tmp3
  tmp13 = tmp0 - tmp3
  tmp11 = tmp1 + tmp2
  tmp12 = tmp1 - tmp2

  tmp0, tmp1, tmp2, tmp3 = _odd_part(d[7], d[5], d[3], d[1])

  shift = CONST_BITS - PASS1_BITS if first else CONST_BITS + PASS1_BITS + 3
  out = [tmp10 + tmp3, tmp11 + tmp2, tmp12 + tmp1, tmp13 + tmp0,
         tmp13 - tmp0, tmp12 - tmp1, tmp11 - tmp2, tmp10 - tmp3]
  return [_descale(o, shift) for o in out]


def _range_limit(x):
  """Post-IDCT range limit, x relative to 128 -> 0..255. The C's IDCT_range_limit table (masked
  with RANGE_MASK) clamps for x in [-512, 511] and wraps beyond; the x86 SIMD IDCT that PIL's
  libjpeg-turbo runs (jidctint-avx2/sse2) packs with signed saturation, a clamp everywhere. Real
  coefficient data stays inside [-512, 511], where the two agree; the clamp is the SIMD's."""
  return jnp.clip(x + 128, 0, 255)


def _idct(coef):
  """[8 (v), 8 (u), ...] dequantised coefficients -> [8 (y), 8 (x), ...] samples 0..255."""
  cols = jnp.stack(_idct_pass([coef[v] for v in range(8)], True), axis=0)        # along v -> y
  rows = jnp.stack(_idct_pass([cols[:, u] for u in range(8)], False), axis=1)    # along u -> x
  return _range_limit(rows)


def _quantize(coef, recip, corr, shift):
  """jcdctmgr.c quantize (8-bit samples): reciprocal multiply on |coef|, sign restored."""
  mag = jnp.abs(coef).astype(jnp.uint32)
  q = jnp.right_shift((mag + corr.astype(jnp.uint32)) * recip.astype(jnp.uint32),
                      shift.astype(jnp.uint32)).astype(jnp.int32)
  return jnp.where(coef < 0, -q, q)


def _code_component(plane, table, consts):
  """[N, 8a, 8b] samples -> the decoded [N, 8a, 8b] samples, quantised with table 0 (luma) or 1
  (chroma) of each image's quality; consts are [N, 2, 8, 8] gathered tables."""
  def pick(name):  # [N, 8, 8] -> [8, 8, N, 1, 1], to broadcast over the block layout
    return jnp.moveaxis(consts[name][:, table], 0, -1)[..., None, None]
  coef = _fdct(_blocks(plane) - 128)
  quant = _quantize(coef, pick('recip'), pick('corr'), pick('shift'))
  return _unblocks(_idct(quant * pick('qt')))


def _ceil(a, b):
  return -(-a // b)


@jax.jit
def jpeg_roundtrip(images, quality):
  """PIL's JPEG round trip (libjpeg-turbo, baseline 4:2:0, IJG tables at `quality`, islow DCTs,
  fancy upsampling): uint8 [N, H, W, 3] and a quality (int, or one per image; 1..100, clipped)
  -> uint8 [N, H, W, 3]. [N, H, W, 1] is a greyscale ('L') JPEG: one component, the luminance
  table, no colour conversion or sampling. Any H, W >= 1. Jitted (one compilation per shape;
  quality is traced, so every quality shares it), and jit-able inside a caller's step."""
  images = jnp.asarray(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f'want uint8 [N, H, W, 3] (or [N, H, W, 1], greyscale), got {images.shape}')
  n, h, w, channels = images.shape
  quality = jnp.clip(jnp.broadcast_to(jnp.asarray(quality, jnp.int32), (n,)), 1, 100)
  consts = {name: jnp.asarray(table)[quality] for name, table in _TABLES.items()}

  if channels == 1:
    # One component: MCU = one 8 x 8 block; edges repeated to whole blocks (expand_right_edge,
    # expand_bottom_edge), the decoder's blocks cropped back.
    grey = _pad_edge(images[..., 0].astype(jnp.int32), 8 * _ceil(h, 8), 8 * _ceil(w, 8))
    return _code_component(grey, 0, consts)[:, :h, :w, None].astype(jnp.uint8)

  mcu_h, mcu_w = 16 * _ceil(h, 16), 16 * _ceil(w, 16)      # whole MCUs (2 x 2 luma blocks)
  ch, cw = _ceil(h, 2), _ceil(w, 2)                        # downsampled_height / _width

  y, cb, cr = _rgb_to_ycc(images.astype(jnp.int32))

  # Luma: the last row / column repeated to whole MCUs (jcprepct expand_bottom_edge after the
  # full-size "downsample", jcsample fullsize_downsample's expand_right_edge; the blocks beyond
  # width_in_blocks are dummy blocks the decoder never shows).
  y_out = _code_component(_pad_edge(y, mcu_h, mcu_w), 0, consts)[:, :h, :w]

  # Chroma, Cb and Cr as one batch of 2N planes (one pass of each kernel, not two):
  # rows: the image's last row repeated to an even count (the conversion buffer's row group);
  # columns: repeated to 2 x the chroma blocks' width (expand_right_edge) before h2v2_downsample;
  # then the last downsampled row repeated to the iMCU height.
  chroma = jnp.concatenate([cb, cr])
  down = _h2v2_downsample(_pad_edge(chroma, 2 * ch, mcu_w))
  down = _pad_edge(down, mcu_h // 2, mcu_w // 2)
  twice = {name: jnp.concatenate([table, table]) for name, table in consts.items()}
  decoded = _code_component(down, 1, twice)[:, :ch, :cw]
  up = (_h2v2_fancy_upsample(decoded) if cw > 2 else _h2v2_upsample(decoded))[:, :h, :w]

  rgb = _ycc_to_rgb(y_out, up[:n], up[n:])
  return rgb.astype(jnp.uint8)
