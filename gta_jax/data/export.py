"""A prepared dataset's images written out in the generic folder layout (datasets/folder/), so that
the built-in data can feed the folder dataset (walkthroughs, benchmarks of a "new generator"):

  DIR/real/<source>/000000.png ...        real images: train, then validation, then test
  DIR/fake/<source>/000000.png ...        each generator's images, in the same order
  DIR/fake_testonly/<source>/...          the test_external split's generators
  DIR/architectures.json                  {fake source: architecture}

Files are numbered in split order (then by the record's `index`), so the folder dataset's
first-number ordering gives a source's train, validation and test images back in that order:
preparing with the original split counts ('TAG-600-150-250' for `default`) rebuilds the same
splits. The images are the stored PNG bytes, written unchanged.

A generator of another test split (the built-in's test_cross_seed and its `variants` splits) is a
fake source of its own. Variant sources keep their name, dots included ('tconv.unseen_seed_1':
'.' is valid in a folder-dataset source name, so the name reads the same in both datasets); a
name the main splits use already gets the split's name after a dot ('tconv.cross_seed').
"""
import collections
import io
import json
import pathlib

from PIL import Image
import tensorflow_datasets as tfds

from gta_jax import errors
from gta_jax.data import builders
from gta_jax.data import pipeline

MAIN_SPLITS = ('train', 'validation', 'test')
EXTERNAL_SPLIT = 'test_external'


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _records(builder, split: str):
  """The split's records with the image left encoded (no decoding: written as stored)."""
  return builder.as_data_source(split=split, decoders={'image': tfds.decode.SkipDecoding()})


def plan(builder) -> tuple[list, dict, tuple | None]:
  """-> ([(split, position, kind, name, rank)], {name: architecture}, the main splits' images per
  source (the smallest source's; None without them)): where each record goes (kind real / fake /
  fake_testonly), read without decoding an image."""
  splits = list(builder.info.splits)
  ordered = ([s for s in MAIN_SPLITS if s in splits] + sorted(
      s for s in splits if s not in MAIN_SPLITS and s != EXTERNAL_SPLIT)
             + [s for s in (EXTERNAL_SPLIT,) if s in splits])
  entries, architectures, main_names, extra_names = [], {}, set(), {}
  counts = collections.Counter()
  for split in ordered:
    source = _records(builder, split)
    for position in range(len(source)):
      record = source[position]
      name, label = _text(record['source']), int(record['label'])
      rank = (MAIN_SPLITS.index(split) if split in MAIN_SPLITS else 0, int(record['index']),
              position)
      if split in MAIN_SPLITS:
        kind = 'real' if label == 0 else 'fake'
        main_names.add(name)
        counts[split, name] += 1
      elif label == 0:
        continue  # real images of the other splits are those of the main ones
      elif split == EXTERNAL_SPLIT:
        kind = 'fake_testonly'
      else:  # another test split's generator: a source of its own
        kind = 'fake'
        key = (split, name)
        if key not in extra_names:
          renamed = name if name not in main_names else f'{name}.{split.removeprefix("test_")}'
          if renamed in extra_names.values():
            renamed = f'{name}.{split.removeprefix("test_")}'
          extra_names[key] = renamed
        name = extra_names[key]
      entries.append((split, position, kind, name, rank))
      if kind != 'real':
        architectures[name] = _text(record['architecture'])
  per_source = None
  if all(s in splits for s in MAIN_SPLITS):
    per_source = tuple(min(n for (s, _), n in counts.items() if s == split) for split in MAIN_SPLITS)
  return entries, architectures, per_source


def check_target(out_dir) -> pathlib.Path:
  """The export's folder must be new or empty (checked before any work)."""
  out_dir = pathlib.Path(out_dir)
  if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
    raise errors.UsageError(f'--export-folder {out_dir}: exists and is not an empty folder; name a '
                            'new one.')
  errors.check_writable_folder(out_dir, '--export-folder')
  return out_dir


def export_folder(builder, out_dir, sources=None, log=print) -> tuple[dict, tuple | None]:
  """Writes `builder`'s images into `out_dir` in the folder layout -> ({'kind/name': count}, the
  main splits' images per source or None); `sources`: the fake sources to write (by their names
  there; default all), reals always."""
  out_dir = check_target(out_dir)
  entries, architectures, per_source = plan(builder)
  valid = builders.module(f'{pipeline.FOLDER}.{pipeline.FOLDER}_dataset_builder').SOURCE_NAME
  available = sorted({name for _, _, kind, name, _ in entries if kind != 'real'})
  if sources is not None:
    wanted = set(sources) - {'real'}
    unknown = sorted(wanted - set(available))
    if unknown:
      raise errors.UsageError(f'--sources: {", ".join(unknown)} not in {builder.name}/'
                              f'{builder.builder_config.name}; it has {", ".join(available)}.')
    entries = [e for e in entries if e[2] == 'real' or e[3] in wanted]
  bad = sorted({name for _, _, _, name, _ in entries if not valid.match(name)})
  if bad:
    raise errors.UsageError(f'{builder.name}: source name(s) {", ".join(bad)} are not valid in the '
                            'folder layout (lower-case letters, digits, ".", "_" and "-").')
  folders = collections.defaultdict(list)
  for split, position, kind, name, rank in entries:
    folders[(kind, name)].append((rank, split, position))
  opened = {}
  for (kind, name), items in sorted(folders.items()):
    target = out_dir / kind / name
    target.mkdir(parents=True, exist_ok=True)
    for number, (_, split, position) in enumerate(sorted(items)):
      if split not in opened:
        opened[split] = _records(builder, split)
      data = opened[split][position]['image']
      suffix = '.png' if data[:4] == b'\x89PNG' else '.' + Image.open(io.BytesIO(data)).format.lower()
      (target / f'{number:06d}{suffix}').write_bytes(data)
  written = {f'{kind}/{name}': len(items) for (kind, name), items in sorted(folders.items())}
  (out_dir / 'architectures.json').write_text(json.dumps(
      {name: architectures[name] for kind, name in sorted(folders) if kind != 'real'},
      indent=2, sort_keys=True) + '\n')
  for folder, count in written.items():
    log(f'  {folder}: {count} images')
  return written, per_source


def image_size(builder) -> int:
  """Side of the first training image (the size to prepare the exported folder at)."""
  data = _records(builder, 'train')[0]['image']
  return Image.open(io.BytesIO(data)).size[0]
