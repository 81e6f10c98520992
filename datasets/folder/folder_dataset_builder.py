"""folder: any generator's images, from a folder of your own (the generic folder dataset).

manual_dir/
  real/<name>/*            real images, one folder per real source (all label 0, source_id 0)
  fake/<name>/*            one folder per generator (source ids 1, 2, ... in sorted-name order)
  fake_testonly/<name>/*   optional: generators no run trains on (the test_external split; ids
                           after the fake ones)
  architectures.json       optional: {"<source>": "<architecture>"}; default: a fake source's
                           architecture is its name, a real one's 'real'

A source's name is its folder's: lower-case letters, digits, '.', '_' and '-', starting with a
letter or digit, unique across real/, fake/ and fake_testonly/ ('real' names no fake source);
hidden folders (.ipynb_checkpoints) are ignored.
Within a folder, files are ordered by the first number in their name; the first TRAIN /
VALIDATION / TEST of each source form the splits (a test-only source gives its first TEST).
Every image is centre-cropped to square and resized to the dataset's image size (skimage, as
FacesHQ+; an image of that size is kept as is), then optionally re-saved as a JPEG.

Each prepared folder dataset is a builder config named by a tag of your choice: 'TAG' (each
source's share of the smallest source's images, 70/10/20) or 'TAG-TRAIN-VAL-TEST' (these counts
per source). The prepare options (image size, JPEG quality), the sources, their ids and
architectures are recorded in the dataset's metadata, so a prepared one loads by its tag alone
(load_prepared: tfds.builder_from_directory), and several coexist in one data_dir:

python -m gta_jax.prepare --dataset folder --manual-dir ~/newgan --config newgan-60-20-20 \\
    --image-size 64 [--jpeg-quality 75] [--skip-corrupt]
"""
import dataclasses
import json
import os
import re

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from gta_jax.data import images as images_lib

from .. import folder_dataset
from ..folder_dataset import Source

NAME = 'folder'
KINDS = ('real', 'fake', 'fake_testonly')  # the layout's top-level folders
ARCHITECTURES_FILE = 'architectures.json'
_TAG = re.compile(r'^([a-z][a-z0-9_]{0,63})(?:-(\d+)-(\d+)-(\d+))?$')
SOURCE_NAME = re.compile(r'^[a-z0-9][a-z0-9._-]{0,63}$')
RESERVED_TAGS = ('default', 'smoke')  # the built-in configs' names: never a folder dataset's
# A tag alone: every source gives as many images as the smallest one has, split in these shares.
DEFAULT_SHARES = (7, 1, 2)
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 4096


@dataclasses.dataclass
class GenericConfig(folder_dataset.FolderConfig):
  tag: str = ''
  image_size: int = 0  # every image is centre-cropped and resized to this side

  def with_counts(self, counts: str) -> str:
    return f'{self.tag}-{counts}'


def parse_name(name) -> tuple[str, tuple[int, int, int] | None]:
  """'newgan' or 'newgan-60-20-20' -> (tag, counts or None); a bad name is a ValueError."""
  match = _TAG.match(name or '')
  if not match or match.group(1) in RESERVED_TAGS:
    reserved = (f' ({match.group(1)!r} is reserved for the built-in data)' if match else '')
    raise ValueError(
        f'folder dataset config {name!r}{reserved}: name it with a tag of your own, optionally '
        'followed by split counts per source, e.g. "newgan" or "newgan-60-20-20" (a tag: '
        'lower-case letters, digits and "_", starting with a letter).')
  tag, *counts = match.groups()
  if counts[0] is None:
    return tag, None
  counts = tuple(map(int, counts))
  if min(counts) < 1:
    raise ValueError(f'folder dataset config {name!r}: every split needs at least one image per '
                     'source (training, validation, test), e.g. "newgan-8-2-2".')
  return tag, counts


def make_config(name, image_size, jpeg_quality: int = 0) -> GenericConfig:
  """The builder config of `prepare --config NAME --image-size N [--jpeg-quality Q]`."""
  tag, counts = parse_name(name)
  if (not isinstance(image_size, int) or isinstance(image_size, bool)
      or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE):
    raise ValueError(f'image size {image_size!r}: the folder dataset needs a training image size '
                     f'from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} px (prepare --image-size N).')
  if not isinstance(jpeg_quality, int) or not 0 <= jpeg_quality <= 100:
    raise ValueError(f'JPEG quality {jpeg_quality!r}: 1 to 100, or 0 to store the images as read.')
  train, validation, test = counts or (0, 0, 0)
  split = (f'{train}/{validation}/{test} images per source' if counts else
           'the smallest source\'s images, 70/10/20, per source')
  stored = f'JPEG quality {jpeg_quality}' if jpeg_quality else 'stored as read'
  return GenericConfig(name=name, description=f'{tag}: {split}, {image_size} px, {stored}',
                       train_size=train, validation_size=validation, test_size=test,
                       jpeg_quality=jpeg_quality, tag=tag, image_size=image_size)


def _suggested_name(name: str) -> str:
  return re.sub(r'[^a-z0-9._-]+', '_', name.lower()).lstrip('._-')[:64] or 'source1'


def find_sources(manual_dir) -> tuple[Source, ...]:
  """The layout's source folders -> Sources (real id 0; fake 1.. by name; test-only after), their
  architectures from architectures.json. Every error names the folder or file at fault."""
  manual_dir = epath.Path(manual_dir)
  if not manual_dir.is_dir():
    raise FileNotFoundError(f'{manual_dir}: no such folder (--manual-dir: the folder holding '
                            'real/<name>/ and fake/<name>/).')
  names = {}  # kind -> sorted source names
  seen = {}   # name -> its folder
  for kind in KINDS:
    top = manual_dir / kind
    if not top.exists():
      names[kind] = []
      continue
    if not top.is_dir():
      raise ValueError(f'{top}: expected a folder of source folders, found a file.')
    entries = sorted(top.iterdir(), key=lambda p: p.name)
    loose = [p.name for p in entries if p.is_file()
             and p.suffix.lower() in images_lib.IMAGE_SUFFIXES]
    if loose:
      raise ValueError(f'{top}: holds images ({loose[0]}, ...) outside a source folder; move them '
                       f'into {kind}/<name>/, one folder per source.')
    names[kind] = [p.name for p in entries if p.is_dir() and not p.name.startswith('.')]
    for name in names[kind]:
      folder = top / name
      if not SOURCE_NAME.match(name):
        raise ValueError(
            f'{folder}: {images_lib.printable(name)!r} is not a valid source name '
            '(lower-case letters, digits, ".", "_" and "-", starting with a letter or digit, at '
            f'most 64); rename the folder, e.g. to {_suggested_name(name)!r}.')
      if kind != 'real' and name == 'real':
        raise ValueError(f'{folder}: "real" names the real class; give this generator another name.')
      if name in seen:
        raise ValueError(f'{seen[name]} and {folder}: two sources named {name!r}; source names '
                         'must be unique across real/, fake/ and fake_testonly/.')
      seen[name] = folder
  for kind, what in (('real', 'real images'), ('fake', 'generated images')):
    if not names[kind]:
      raise ValueError(f'{manual_dir / kind}: no source folders; put the {what} in '
                       f'{kind}/<name>/ (e.g. {kind}/{"celeba" if kind == "real" else "newgan"}/).')
  architectures = read_architectures(manual_dir, names)
  sources = [Source(f'real/{name}', name, 0, 'real') for name in names['real']]
  next_id = 1
  for kind in ('fake', 'fake_testonly'):
    for name in names[kind]:
      sources.append(Source(f'{kind}/{name}', name, next_id, architectures.get(name, name),
                            external=kind == 'fake_testonly'))
      next_id += 1
  for source in sources:
    if not folder_dataset.list_source(manual_dir, source):
      raise ValueError(f'{manual_dir / source.folder}: no images (files ending in '
                       f'{", ".join(images_lib.IMAGE_SUFFIXES)}).')
  return tuple(sources)


def read_architectures(manual_dir, names: dict) -> dict:
  """architectures.json -> {source: architecture} (empty without the file)."""
  path = epath.Path(manual_dir) / ARCHITECTURES_FILE
  if not path.exists():
    return {}
  try:
    mapping = json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f'{path}: not valid JSON ({e}).') from None
  if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
    raise ValueError(f'{path}: expected an object {{"<source>": "<architecture>", ...}}.')
  known = {name for kind in KINDS for name in names[kind]}
  unknown = sorted(set(mapping) - known)
  if unknown:
    raise ValueError(f'{path}: no source folder named {", ".join(map(repr, unknown))}; the sources '
                     f'are {", ".join(sorted(known))}.')
  for name, architecture in mapping.items():
    if name in names['real'] and architecture != 'real':
      raise ValueError(f'{path}: {name!r} is a real source; its architecture is "real".')
    if not SOURCE_NAME.match(architecture):
      raise ValueError(f'{path}: architecture {architecture!r} of {name!r} is not a valid name '
                       '(lower-case letters, digits, ".", "_" and "-").')
  return {name: architecture for name, architecture in mapping.items()
          if name not in names['real']}


def split_counts(manual_dir, sources, config: GenericConfig,
                 readable: folder_dataset.Readable | None = None) -> GenericConfig:
  """`config` with its split counts: the tag's own, or all of the smallest source's (readable)
  images, about 70/10/20 (validation and test rounded, at least one each; training the rest)."""
  if config.train_size:
    return config
  readable = readable or folder_dataset.Readable(False)
  trained = [s for s in sources if not s.external]
  sizes = {s: len(readable.files(folder_dataset.list_source(manual_dir, s))) for s in trained}
  smallest = min(trained, key=lambda s: sizes[s])
  available = sizes[smallest]
  if available < 3:
    raise ValueError(f'{epath.Path(manual_dir) / smallest.folder}: {available} images; every '
                     'source needs at least 3 (one for each of training, validation and test).')
  share = sum(DEFAULT_SHARES)
  validation = max(1, round(available * DEFAULT_SHARES[1] / share))
  test = max(1, round(available * DEFAULT_SHARES[2] / share))
  return dataclasses.replace(config, train_size=available - validation - test,
                             validation_size=validation, test_size=test)


def plan(manual_dir, config: GenericConfig, readable: folder_dataset.Readable | None = None
         ) -> tuple[tuple, GenericConfig, dict]:
  """-> (sources, `config` with its split counts, {split: [(source, path), ...]}): everything
  but the images (unless `readable` skips corrupt ones: then it decodes them to count them), so
  prepare reports a layout's or a count's error before writing anything."""
  manual_dir = epath.Path(manual_dir)
  sources = find_sources(manual_dir)
  config = split_counts(manual_dir, sources, config, readable)
  return sources, config, folder_dataset.assign_splits(manual_dir, sources, config, readable)


def source_ids(sources) -> dict:
  """{name: id} for config.sources and the loader: every source, and 'real' for the real class."""
  return {'real': 0} | {s.name: s.source_id for s in sources}


class Builder(folder_dataset.FolderBuilder):
  """Real vs any generators, from the folder layout above (configs are made from prepare's flags)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = []  # each prepared one is named by its tag (make_config)

  def __init__(self, *, config=None, image_size: int | None = None, jpeg_quality: int = 0,
               **kwargs):
    if not isinstance(config, GenericConfig):
      config = make_config(config, image_size, jpeg_quality)
    super().__init__(config=config, **kwargs)

  def prepare_image(self, rgb: np.ndarray, path) -> np.ndarray:
    del path
    return folder_dataset.centre_crop_resize(rgb, self.builder_config.image_size)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, description=self.MANUAL_DOWNLOAD_INSTRUCTIONS,
                                 features=folder_dataset.features(),
                                 metadata=tfds.core.MetadataDict(source_ids={}, skipped_files=[]))

  def _split_generators(self, dl_manager):
    manual_dir = epath.Path(dl_manager.manual_dir)
    readable = folder_dataset.Readable(self._skip_corrupt)
    sources, config, splits = plan(manual_dir, self.builder_config, readable)
    self._skipped.extend(readable.skipped)
    self.info.metadata.update(
        source_fingerprint=folder_dataset.fingerprint(manual_dir, sources, self._skip_corrupt),
        tag=config.tag, image_size=config.image_size, jpeg_quality=config.jpeg_quality,
        split_sizes={'train': config.train_size, 'validation': config.validation_size,
                     'test': config.test_size},
        source_ids=source_ids(sources),
        architectures={s.name: s.architecture for s in sources},
        sources=[{'name': s.name, 'folder': s.folder, 'source_id': s.source_id,
                  'architecture': s.architecture, 'test_only': s.external} for s in sources],
        manual_dir=images_lib.printable(os.path.abspath(os.fspath(manual_dir))))
    return {name: self._generate_examples(items) for name, items in splits.items()}


def prepared_configs(data_dir) -> list[str]:
  """The folder datasets prepared in `data_dir`, by config name."""
  root = epath.Path(data_dir) / NAME
  if not root.is_dir():
    return []
  return sorted(p.name for p in root.iterdir() if _version_dirs(p))


def _version_dirs(config_dir) -> list:
  if not config_dir.is_dir():
    return []
  found = []
  for p in config_dir.iterdir():
    try:
      version = tfds.core.Version(p.name)
    except ValueError:  # incomplete.* folders of an interrupted build
      continue
    if (p / 'dataset_info.json').is_file():
      found.append((version, p))
  return [p for _, p in sorted(found)]


def load_prepared(config: str, data_dir):
  """The prepared folder dataset `config` in `data_dir` (newest version) as a read-only TFDS
  builder, or None when it is not prepared there; a bad name is a ValueError."""
  parse_name(config)
  versions = _version_dirs(epath.Path(data_dir) / NAME / config)
  return tfds.builder_from_directory(versions[-1]) if versions else None
