"""What the folder builders share: GANFP and FacesHQ+ (presets: their release's sources, image
rule and split counts) and the generic `folder` dataset (sources read from the folder's layout).

Within a source folder, files are ordered by the first number in their name (as the release's
data_prep); the first train/validation/test counts form the splits. Counts are part of the builder
config, named 'TRAIN-VAL-TEST' (e.g. '700-100-200'), so smaller folders build too. A dataset the
release re-saved as JPEG (FacesHQ+, quality 75) is stored that way; the suffix '-png' ('default-png',
'700-100-200-png') keeps the images as read instead.
"""
import dataclasses
import hashlib
import io
import os
import re

from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from gta_jax.data import augment
from gta_jax.data import images as images_lib

_FIRST_NUMBER = re.compile(r'\d+')
_NAME = re.compile(r'^(?:(default)|(\d+)-(\d+)-(\d+))(-png)?$')


@dataclasses.dataclass(frozen=True)
class Source:
  folder: str          # relative to manual_dir, e.g. 'fake/progan_celeba'
  name: str            # e.g. 'progan'
  source_id: int       # the release's numbering; real sources are 0
  architecture: str    # arch-level name ('stylegan' for both StyleGAN sources)
  external: bool = False  # test-only source, its own split

  @property
  def label(self) -> int:
    return 0 if self.source_id == 0 and not self.external else 1


@dataclasses.dataclass
class FolderConfig(tfds.core.BuilderConfig):
  train_size: int = 0
  validation_size: int = 0
  test_size: int = 0
  # > 0: every image is re-saved as a JPEG of this quality (PIL, 4:2:0) before it is stored.
  jpeg_quality: int = 0

  def with_counts(self, counts: str) -> str:
    """The config name that asks for split counts 'TRAIN-VAL-TEST' (what the advice suggests)."""
    return counts


def config_from_name(name: str, defaults: FolderConfig) -> FolderConfig:
  """'default' or 'TRAIN-VAL-TEST', optionally with '-png' -> a builder config."""
  match = _NAME.match(name or 'default')
  if not match:
    raise ValueError(f'builder config {name!r}: use "default" or split counts "TRAIN-VAL-TEST", '
                     'e.g. "700-100-200", optionally ending in "-png".')
  is_default, *counts, png = match.groups()
  jpeg_quality = 0 if png else defaults.jpeg_quality
  if is_default and not png:
    return defaults
  train, validation, test = ((defaults.train_size, defaults.validation_size, defaults.test_size)
                             if is_default else map(int, counts))
  if min(train, validation, test) < 1:
    raise ValueError(f'builder config {name!r}: every split needs at least one image per source '
                     '(training, validation, test), e.g. "8-2-2".')
  stored = ' (stored as read)' if png and defaults.jpeg_quality else ''
  return FolderConfig(name=name, description=f'{train}/{validation}/{test} images per source{stored}',
                      train_size=train, validation_size=validation, test_size=test,
                      jpeg_quality=jpeg_quality)


def sort_key(path) -> tuple:
  """Order by the first number in the file name, as the release does (then by name)."""
  match = _FIRST_NUMBER.search(path.stem)
  return (int(match.group()) if match else float('inf'), path.name)


def list_source(manual_dir: epath.Path, source: Source) -> list:
  folder = manual_dir / source.folder
  if not folder.is_dir():
    raise FileNotFoundError(f'{folder}: missing source folder for {source.name}. Expected the '
                            'release layout under manual_dir (see the builder docstring).')
  files = [p for p in folder.iterdir() if p.suffix.lower() in images_lib.IMAGE_SUFFIXES]
  return sorted(files, key=sort_key)


class Readable:
  """With --skip-corrupt: which files decode, each checked once per build (the splits are counted
  after the unreadable ones are left out, so none is left short or empty by them); `skipped`
  lists those left out, each with its error. Without it (`skip_corrupt` False) every file counts,
  and an unreadable one stops the build later, listed with the others."""

  def __init__(self, skip_corrupt: bool):
    self.skip_corrupt = skip_corrupt
    self.skipped = []
    self._checked = {}

  def files(self, files: list, wanted: int | None = None) -> list:
    """The first `wanted` (None: all) of `files` that read."""
    if not self.skip_corrupt:
      return files if wanted is None else files[:wanted]
    kept = []
    for path in files:
      if wanted is not None and len(kept) == wanted:
        break
      if path not in self._checked:
        try:
          images_lib.read_rgb(path)
          self._checked[path] = True
        except images_lib.ImageReadError as e:
          self._checked[path] = False
          self.skipped.append(images_lib.printable(e))
      if self._checked[path]:
        kept.append(path)
    return kept

  def left_out(self, files: list) -> int:
    return sum(self._checked.get(p) is False for p in files)


def fingerprint(manual_dir, sources, skip_corrupt: bool, contents: bool = True) -> dict:
  """What a prepared dataset was built from: every image file of its source folders and
  architectures.json if there is one, and the skip setting, as three digests:
  `sha256` over names, sizes and modification times (what make and rsync compare: quick),
  `listing` over names and sizes, and `contents` over names and bytes (`contents=False` skips
  reading them). A folder changed since (an image fixed, added or removed) gives other digests,
  so prepare can refuse a stale dataset; a copy that reset the times (cp without -p) has the
  same listing and contents. A file that cannot be read (a broken link) counts as such."""
  manual_dir = epath.Path(manual_dir)
  setting = f'skip_corrupt={bool(skip_corrupt)}\n'.encode()
  quick, listing = hashlib.sha256(setting), hashlib.sha256(setting)
  content = hashlib.sha256(setting) if contents else None
  count = 0
  for source in sources:
    header = f'{source.folder}\0{source.name}\0{source.source_id}\n'.encode()
    for digest in filter(None, (quick, listing, content)):
      digest.update(header)
    for path in list_source(manual_dir, source):
      name = images_lib.printable(path.name)
      try:
        status = os.stat(os.fspath(path))
        size, mtime = status.st_size, status.st_mtime_ns
      except OSError as e:
        size, mtime = f'unreadable {e.errno}', ''
      quick.update(f'{name}\0{size}\0{mtime}\n'.encode())
      listing.update(f'{name}\0{size}\n'.encode())
      if content is not None:
        content.update(f'{name}\0'.encode())
        try:
          with open(os.fspath(path), 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
              content.update(block)
        except OSError as e:
          content.update(f'unreadable {e.errno}'.encode())
        content.update(b'\n')
      count += 1
  extra = manual_dir / 'architectures.json'
  if extra.is_file():
    for digest in filter(None, (quick, listing, content)):
      digest.update(b'architectures.json\0' + extra.read_bytes())
  found = {'sha256': quick.hexdigest(), 'listing': listing.hexdigest(), 'files': count,
           'skip_corrupt': bool(skip_corrupt)}
  if content is not None:
    found['contents'] = content.hexdigest()
  return found


def same_source(recorded: dict | None, manual_dir, sources, skip_corrupt: bool) -> tuple:
  """Whether a build's recorded fingerprint is the folder's now -> (same, the current quick
  fingerprint). The times first; where only they differ, the files' bytes decide."""
  current = fingerprint(manual_dir, sources, skip_corrupt, contents=False)
  if not recorded:
    return False, current
  if recorded.get('sha256') == current['sha256']:
    return True, current
  if recorded.get('listing') == current['listing'] and recorded.get('contents'):
    current = fingerprint(manual_dir, sources, skip_corrupt)
    return recorded['contents'] == current['contents'], current
  return False, current


def assign_splits(manual_dir, sources, config: FolderConfig, readable: Readable | None = None
                  ) -> dict:
  """-> {split: [(source, path), ...]}; a source with too few (readable) images is a clear
  error. With `readable` skipping corrupt files, each split takes the next readable ones."""
  readable = readable or Readable(False)
  splits = {'train': [], 'validation': [], 'test': [], 'test_external': []}
  wanted = config.train_size + config.validation_size + config.test_size
  for source in sources:
    listed = list_source(manual_dir, source)
    if source.external:
      files = readable.files(listed, config.test_size or None)
      if not files:
        raise ValueError(f'{manual_dir / source.folder}: no readable image ({len(listed)} files, '
                         f'{readable.left_out(listed)} unreadable left out).')
      splits['test_external'] += [(source, p) for p in files]
      continue
    files = readable.files(listed, wanted)
    if len(files) < wanted:
      fitting = _fit(len(files), config)
      fitting = fitting and config.with_counts(fitting)
      advice = (f'Use a smaller config that fits, e.g. {fitting} (prepare --config {fitting}, then '
                f'train with --config.data.config={fitting}), or add images.' if fitting else
                'Add images: each split needs at least one per source.')
      unreadable = readable.left_out(listed)
      counted = (f'{len(files)} readable images ({unreadable} unreadable left out)' if unreadable
                 else f'{len(files)} images')
      raise ValueError(
          f'{manual_dir / source.folder}: {counted}, but config {config.name!r} needs '
          f'{wanted} ({config.train_size}/{config.validation_size}/{config.test_size}). {advice}')
    bounds = np.cumsum([0, config.train_size, config.validation_size, config.test_size])
    for split, lo, hi in zip(('train', 'validation', 'test'), bounds[:-1], bounds[1:]):
      splits[split] += [(source, p) for p in files[lo:hi]]
  return {k: v for k, v in splits.items() if v}


def _fit(available: int, config: FolderConfig) -> str | None:
  """Split counts in the config's proportions that `available` images fill (None: under 3)."""
  if available < 3:
    return None
  wanted = [config.train_size, config.validation_size, config.test_size]
  counts = [max(1, int(n * available / sum(wanted))) for n in wanted]
  while sum(counts) > available:  # the max(1, ...) floors can overshoot: trim the largest
    counts[counts.index(max(counts))] -= 1
  return '-'.join(map(str, counts))


def centre_crop_resize(rgb: np.ndarray, size: int) -> np.ndarray:
  """Centre-crop to square, then skimage's default resize to `size` on float64, clip, truncate
  (FacesHQ+'s rule, the release's data_crop.py); an image of that size already is kept as is."""
  height, width = rgb.shape[:2]
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  rgb = rgb[top:top + side, left:left + side]
  if side != size:
    from skimage.transform import resize
    rgb = np.clip(resize(rgb.astype(np.float64), (size, size)), 0, 255).astype(np.uint8)
  return rgb


def features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3)),
      'label': tfds.features.ClassLabel(names=['real', 'fake']),
      'source': tfds.features.Text(),
      'source_id': np.int32,
      'architecture': tfds.features.Text(),
      'index': np.int32,
  })


def generate_examples(items, prepare_image, skip_corrupt: bool, skipped: list,
                      jpeg_quality: int = 0):
  """Yields examples; unreadable files are collected and reported together (or skipped)."""
  bad = []
  for index, (source, path) in enumerate(items):
    try:
      rgb, _ = images_lib.read_rgb(path)
      rgb = prepare_image(rgb, path)
      if jpeg_quality:  # the release re-saved these as JPEG (PIL's default quality 75)
        rgb = augment.jpeg(rgb, jpeg_quality)
    except images_lib.ImageReadError as e:
      (skipped if skip_corrupt else bad).append(images_lib.printable(e))
      continue
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format='PNG')
    # The key is text: a file name that is not UTF-8 is written with \\xNN escapes.
    name = images_lib.printable(path.name)
    yield f'{source.name}_{name}', {
        'image': buffer.getvalue(), 'label': source.label, 'source': source.name,
        'source_id': source.source_id, 'architecture': source.architecture, 'index': index}
  if bad:
    listing = '\n  '.join(bad[:50]) + (f'\n  ... and {len(bad) - 50} more' if len(bad) > 50 else '')
    raise images_lib.UnreadableImages(f'{len(bad)} unreadable image(s); nothing was written. Fix or remove them, '
                     f'or build with skip_corrupt=True to leave them out:\n  {listing}')


class FolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the folder builders: the presets set SOURCES, DEFAULT, prepare_image and the docs;
  the generic one (datasets/folder/) finds its sources in manual_dir.

  Builder(config='700-100-200', skip_corrupt=True, data_dir=...) builds with other split counts
  and leaves unreadable files out (listed in info.metadata['skipped_files']).
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  SOURCES: tuple = ()
  DEFAULT: FolderConfig = None
  EXTRA_SOURCE_IDS: dict = {}

  def __init__(self, *, config=None, skip_corrupt: bool = False, **kwargs):
    if isinstance(config, str) or config is None:
      config = config_from_name(config, self.DEFAULT)
    self._skip_corrupt = skip_corrupt
    self._skipped = []
    super().__init__(config=config, **kwargs)

  @staticmethod
  def prepare_image(rgb: np.ndarray, path) -> np.ndarray:
    raise NotImplementedError

  def _info(self):
    ids = {s.name: s.source_id for s in self.SOURCES} | dict(self.EXTRA_SOURCE_IDS)
    return tfds.core.DatasetInfo(builder=self, description=self.MANUAL_DOWNLOAD_INSTRUCTIONS,
                                 features=features(),
                                 metadata=tfds.core.MetadataDict(source_ids=ids, skipped_files=[]))

  def _split_generators(self, dl_manager):
    readable = Readable(self._skip_corrupt)
    splits = assign_splits(dl_manager.manual_dir, self.SOURCES, self.builder_config, readable)
    self._skipped.extend(readable.skipped)
    self.info.metadata['source_fingerprint'] = fingerprint(dl_manager.manual_dir, self.SOURCES,
                                                           self._skip_corrupt)
    return {name: self._generate_examples(items) for name, items in splits.items()}

  def _generate_examples(self, items):
    yield from generate_examples(items, self.prepare_image, self._skip_corrupt, self._skipped,
                                 self.builder_config.jpeg_quality)
    self.info.metadata['skipped_files'] = list(self._skipped)
