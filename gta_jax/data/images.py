"""Reading user images as 8-bit RGB, converting what a user would expect and refusing the rest.

Every failure is an `ImageReadError` whose message names the file and the problem, so batch
commands can record it and carry on.
"""
import errno
import os
import pathlib
import sys
import warnings

import numpy as np
from PIL import Image
from PIL import ImageOps

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff', '.gif')
# Refuse images above this many pixels before decoding them (decompression bombs).
MAX_PIXELS = 8192 * 8192


class ImageReadError(ValueError):
  pass


class UnreadableImages(ValueError):
  """Some images of a folder could not be read; the message lists them (`prepare` exits 1)."""


def printable(text) -> str:
  """Text (a path, a message naming one) safe to print or store: bytes of a file name that are
  not UTF-8 are shown as \\xNN instead of crashing the print."""
  return os.fsencode(str(text)).decode('utf-8', 'backslashreplace')


_PLAIN_PATH = type(pathlib.Path())


class UnreadableEntry(_PLAIN_PATH):
  """A folder scan's entry that is no image file it could read: a folder it may not open, a broken
  or looping link, an entry it cannot stat. It stands in the list where it was found, so each
  command's usual error path (read_rgb raises ImageReadError naming it) counts it as failed."""
  if sys.version_info >= (3, 12):
    def __init__(self, path, problem: str):
      super().__init__(path)
      self.problem = problem

    def with_segments(self, *segments):  # paths derived from it are plain paths
      return _PLAIN_PATH(*segments)
  else:
    def __new__(cls, path, problem: str):
      entry = super().__new__(cls, path)
      entry.problem = problem
      return entry

  def __reduce__(self):  # copy and pickle (worker processes) keep the problem
    return type(self), (str(self), self.problem)


def _scan(folder: pathlib.Path, ancestors: tuple, visited: set, found: list) -> None:
  try:
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
  except OSError as e:
    found.append(UnreadableEntry(folder, f'the folder cannot be read ({e.strerror}); no image '
                                 'in it was scanned'))
    return
  for entry in entries:
    path = pathlib.Path(entry.path)
    try:
      if entry.is_symlink():
        try:
          os.stat(path)
        except OSError as e:
          kind = 'looping' if e.errno == errno.ELOOP else 'broken'
          found.append(UnreadableEntry(path, f'a {kind} link (to {os.readlink(path)})'))
          continue
      if entry.is_dir():  # a linked folder too, once
        status = path.stat()
        key = (status.st_dev, status.st_ino)
        if key in ancestors:
          found.append(UnreadableEntry(path, f'a link back to a folder it is inside of '
                                       f'({os.path.realpath(path)}); not followed'))
        elif key not in visited:  # reached again through a link: its images are listed once
          visited.add(key)
          _scan(path, ancestors + (key,), visited, found)
      elif entry.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        found.append(path)
    except OSError as e:
      found.append(UnreadableEntry(path, f'cannot be read ({e.strerror})'))


def list_images(paths) -> list[pathlib.Path]:
  """Files as given, folders expanded (recursively, sorted) to the image files inside them.

  Nothing is left out silently: a subfolder that cannot be opened, a broken or looping link and
  an entry that cannot be read are listed as UnreadableEntry (read_rgb raises on them, so they
  count as failed files); symlinked folders are followed, each folder scanned once."""
  found = []
  for path in map(pathlib.Path, paths):
    if path.is_dir():
      status = path.stat()
      key = (status.st_dev, status.st_ino)
      folder = []
      _scan(path, (key,), {key}, folder)
      found.extend(sorted(folder))
    else:
      found.append(path)
  return found


def _to_rgb(image: Image.Image) -> tuple[np.ndarray, list[str]]:
  notes = []
  mode = image.mode
  if mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I'):
    # 16-bit greyscale: keep the top 8 bits (PIL's convert would clip everything above 255).
    array = np.asarray(image).astype(np.int64)
    top = 65535 if mode.startswith('I;16') or array.max() > 255 else 255
    array = np.round(array.clip(0, top) * (255.0 / top)).astype(np.uint8)
    notes.append(f'{mode} scaled to 8 bits')
    return np.repeat(array[..., None], 3, axis=-1), notes
  if mode == 'F':
    raise ImageReadError('floating-point (mode F) images are not supported; save it as 8-bit')
  if mode in ('RGBA', 'LA', 'PA') or (mode == 'P' and 'transparency' in image.info):
    notes.append('alpha channel dropped')
  if mode != 'RGB':
    if mode not in ('L', 'P', 'RGBA', 'LA', 'PA', '1', 'CMYK', 'YCbCr', 'LAB', 'HSV', 'RGBX', 'La'):
      raise ImageReadError(f'unsupported image mode {mode}')
    if mode == 'P':
      image = image.convert('RGBA')
    if mode == 'CMYK':
      notes.append('CMYK converted to RGB')
    image = image.convert('RGB')
  array = np.asarray(image)
  if array.dtype != np.uint8:  # 16-bit-per-channel RGB decodes as such in some PIL versions
    array = (array.astype(np.float64) / np.iinfo(array.dtype).max * 255).round().astype(np.uint8)
    notes.append('16-bit channels scaled to 8 bits')
  return array, notes


def read_rgb(path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, list[str]]:
  """-> ([H, W, 3] uint8, notes about conversions); EXIF orientation applied.

  Raises ImageReadError for missing, empty, truncated, non-image, oversized (over `max_pixels`,
  checked before decoding) or odd files. Animations and multi-page files give their first frame,
  with a note saying so.
  """
  if getattr(path, 'problem', None):  # what a folder scan could not read (list_images)
    raise ImageReadError(f'{printable(path)}: {path.problem}')
  path = pathlib.Path(path)
  if not path.exists():
    raise ImageReadError(f'{path}: no such file')
  if not path.is_file():
    raise ImageReadError(f'{path}: not a regular file')
  if path.stat().st_size == 0:
    raise ImageReadError(f'{path}: empty file (0 bytes)')
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('error', Image.DecompressionBombWarning)
      with Image.open(path) as image:
        width, height = image.size
        if width * height > min(max_pixels, MAX_PIXELS):
          if width * height > MAX_PIXELS:
            raise ImageReadError(f'{path}: {width}x{height} is too large to be a dataset image '
                                 f'(over {MAX_PIXELS:,} pixels; possible decompression bomb)')
          raise ImageReadError(f'{path}: {width}x{height} is over the {max_pixels:,}-pixel limit '
                               'of one scored image (the memory bound); crop it into pieces')
        if width == 0 or height == 0:
          raise ImageReadError(f'{path}: image has zero size')
        image.load()
        oriented = ImageOps.exif_transpose(image)
        notes = ['EXIF orientation applied'] if oriented.size != image.size or (
            image.getexif().get(0x0112, 1) not in (1, None)) else []
        frames = getattr(image, 'n_frames', 1)
        if frames > 1:
          notes.append(f'first of {frames} frames scored')
        array, more = _to_rgb(oriented)
        return array, notes + more
  except ImageReadError as e:
    if str(path) in str(e):
      raise
    raise ImageReadError(f'{path}: {e}') from None
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise ImageReadError(f'{path}: refused as a possible decompression bomb ({e})') from None
  except Image.UnidentifiedImageError:
    raise ImageReadError(f'{path}: not an image file PIL can read') from None
  except PermissionError as e:
    raise ImageReadError(f'{path}: cannot be read ({e.strerror})') from None
  except (OSError, SyntaxError, ValueError) as e:
    raise ImageReadError(f'{path}: corrupt or truncated image ({e})') from None
