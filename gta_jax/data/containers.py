"""What an image file's container says about how it was written, read back from the bytes: the
JPEG quality (from the quantisation tables) and the chroma subsampling.

The quality is the IJG scale libjpeg (and so PIL and OpenCV) applies to the standard tables of
the JPEG specification (Annex K): scale = 5000 / q for q < 50, else 200 - 2q; each entry is
(base * scale + 50) // 100, clipped to 1..255 (libjpeg's jcparam.c, force_baseline). A file whose
tables are exactly those of some quality gets that quality; other encoders' tables (cameras,
Photoshop) get the nearest one, marked as an estimate.
"""
import io

import numpy as np
from PIL import Image
from PIL import JpegImagePlugin

# JPEG specification Annex K, tables K.1 (luminance) and K.2 (chrominance), natural order (the
# order PIL's Image.quantization gives).
LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])
CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32)
SUBSAMPLING = {0: '4:4:4', 1: '4:2:2', 2: '4:2:0'}  # PIL's get_sampling codes


def ijg_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
  """The (luminance, chrominance) tables libjpeg writes at `quality` (1..100)."""
  scale = 5000 // quality if quality < 50 else 200 - 2 * quality
  return tuple(np.clip((base * scale + 50) // 100, 1, 255) for base in (LUMA, CHROMA))


_TABLES = {q: ijg_tables(q) for q in range(1, 101)}


def jpeg_quality(tables: dict) -> tuple[int, bool]:
  """PIL's Image.quantization of a JPEG -> (the IJG quality, exact): exact when the tables are
  those libjpeg writes at that quality; else the quality whose tables are nearest (sum of the
  absolute log-ratios), exact False. A greyscale file has one table."""
  luma = np.asarray(tables[0])
  chroma = np.asarray(tables[1]) if 1 in tables else None

  def distance(q):
    want_luma, want_chroma = _TABLES[q]
    d = np.abs(np.log(luma) - np.log(want_luma)).sum()
    if chroma is not None:
      d += np.abs(np.log(chroma) - np.log(want_chroma)).sum()
    return d

  best = min(_TABLES, key=distance)
  return best, bool(distance(best) == 0)


def read_jpeg(data: bytes) -> dict | None:
  """A JPEG's bytes -> {'quality', 'quality_exact', 'subsampling'}; None when it is no JPEG."""
  with Image.open(io.BytesIO(data)) as image:
    if image.format != 'JPEG':
      return None
    quality, exact = jpeg_quality(image.quantization)
    sampling = JpegImagePlugin.get_sampling(image) if image.mode != 'L' else None
    return {'quality': quality, 'quality_exact': exact,
            'subsampling': SUBSAMPLING.get(sampling, 'greyscale' if sampling is None else 'other')}
