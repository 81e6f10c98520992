"""A shortcut audit: can the *container* of the images (format, size, JPEG quality, metadata...)
tell real from fake, or one source from the others? A network can learn the container instead of
the generator (DIRE's JPEG/PNG and size shortcuts). And a flip test: how many of a trained model's
verdicts change when real and fake images are re-encoded the same way.

Container features of one file, read from its bytes (`container_features`):
  format, size (WxH), mode, bit_depth (per channel; a PNG's from its IHDR), jpeg_quality (IJG
  quality from the quantisation tables, gta_jax/data/containers.py; '~q' when only nearest),
  subsampling, exif, icc (present or not) -- the container features -- and file_size (bytes) and
  bits_per_pixel (8 * file_size / pixels), which depend on the pixels too (a PNG's size is its
  pixels' compressibility), so they are reported apart (see `separability`).

The separability check (`separability`), for the question real vs fake and for each source vs all
the other sources: a classifier on container features only, cross-validated (stratified k-fold,
k = min(5, smaller class), fixed seed), scored by balanced accuracy (chance is 0.5 whatever the
class sizes). The classifier is a lookup table (each value -> the class it is more frequent in,
relative to the class sizes; a value not seen in training -> one fixed class): on one container
feature, the best any classifier can do with that feature alone; on all container features
together, on their joint value; file_size and bits_per_pixel are binned first (CONTENT_BINS bins
at the training folds' quantiles).
Flagged: balanced accuracy >= FLAG_ACCURACY (0.6) AND a permutation test (PERMUTATIONS label
shuffles, same folds and seed) gives p <= FLAG_P (0.01). Both: on a few dozen images 0.6 happens
by chance (the test), and on thousands a significant 0.52 is no shortcut worth a flag (the
effect size). A constant feature cannot flag: its table predicts one class, balanced accuracy 0.5.
"""
import collections
import dataclasses
import io
import pathlib
import struct
import tempfile
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from gta_jax.data import augment
from gta_jax.data import containers
from gta_jax.data import images as images_lib

CONTAINER_FEATURES = ('format', 'size', 'mode', 'bit_depth', 'jpeg_quality', 'subsampling',
                      'exif', 'icc')
CONTENT_FEATURES = ('file_size', 'bits_per_pixel')  # numeric; depend on the pixels as well
FLAG_ACCURACY = 0.6
FLAG_P = 0.01
PERMUTATIONS = 100
FOLDS = 5
SEED = 0
CONTENT_BINS = 8

_BIT_DEPTH = {'1': 1, 'I;16': 16, 'I;16B': 16, 'I;16L': 16, 'I;16N': 16, 'I': 32, 'F': 32}
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _png_bit_depth(data: bytes) -> int | None:
  """A PNG's bit depth per channel from its IHDR chunk (PIL opens 16-bit RGB as 8-bit 'RGB')."""
  if data[:8] != _PNG_SIGNATURE or data[12:16] != b'IHDR' or len(data) < 26:
    return None
  return data[24]


def container_features(data: bytes) -> dict:
  """An image file's bytes -> its container features (see the module docstring). Raises
  images_lib.ImageReadError when PIL cannot read it."""
  if not data:
    raise images_lib.ImageReadError('empty file (0 bytes)')
  try:
    with Image.open(io.BytesIO(data)) as image:
      width, height = image.size
      mode = image.mode
      fmt = image.format or 'unknown'
      exif = bool(image.info.get('exif')) or bool(len(image.getexif()))
      icc = bool(image.info.get('icc_profile'))
      bits = getattr(image, 'bits', None) if fmt == 'JPEG' else None
  except (Image.UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error) as e:
    raise images_lib.ImageReadError(f'not an image file PIL can read ({e})') from None
  depth = _png_bit_depth(data) if fmt == 'PNG' else None
  depth = depth or bits or _BIT_DEPTH.get(mode, 8)
  jpeg = containers.read_jpeg(data) if fmt == 'JPEG' else None
  quality = 'none'
  if jpeg is not None:
    quality = str(jpeg['quality']) if jpeg['quality_exact'] else f'~{jpeg["quality"]}'
  return {'format': fmt, 'size': f'{width}x{height}', 'mode': mode, 'bit_depth': int(depth),
          'jpeg_quality': quality, 'subsampling': jpeg['subsampling'] if jpeg else 'none',
          'exif': exif, 'icc': icc, 'file_size': len(data),
          'bits_per_pixel': 8.0 * len(data) / max(1, width * height)}


@dataclasses.dataclass
class Item:
  """One image of the audited set: its source, label (0 real, 1 fake), a name for messages, and
  how to get its bytes again (the flip test re-reads them)."""
  source: str
  label: int
  name: str
  load: Callable[[], bytes]
  features: dict | None = None


# ------------------------------------------------------------------------------------- inputs


def folder_items(folder) -> list[Item]:
  """A folder tree in the folder dataset's layout (real/<name>/, fake/<name>/,
  fake_testonly/<name>/; datasets/folder) -> one Item per image file `prepare` would take (each
  source folder's own image files, not its subfolders'; one that cannot be read is an Item whose
  load raises). The layout's errors (no real/ or
  fake/ source folders, a bad source name, loose images) raise ValueError naming the folder."""
  from etils import epath

  from gta_jax.data import builders
  layout = builders.module('folder.folder_dataset_builder')
  listing = builders.module('folder_dataset')
  folder = pathlib.Path(folder)
  items = []
  for source in layout.find_sources(folder):
    for path in listing.list_source(epath.Path(folder), source):  # the files prepare would take
      items.append(Item(source.name, source.label, images_lib.printable(path),
                        _file_reader(pathlib.Path(path))))
  return items


def _file_reader(path) -> Callable[[], bytes]:
  def load():
    problem = getattr(path, 'problem', None)
    if problem:
      raise images_lib.ImageReadError(problem)
    try:
      return pathlib.Path(path).read_bytes()
    except OSError as e:
      raise images_lib.ImageReadError(f'cannot be read ({e.strerror})') from None
  return load


def dataset_items(name: str, config: str, data_dir: str, split: str = 'train') -> list[Item]:
  """A prepared dataset's split -> one Item per record, its bytes the encoded image the builder
  stored (read with tfds' SkipDecoding: what the training pipeline decodes)."""
  import tensorflow_datasets as tfds

  from gta_jax import errors
  from gta_jax.data import pipeline
  builder = pipeline.load_builder(name, config, data_dir)
  if split not in builder.info.splits:
    raise errors.UsageError(f'--split {split}: {name}/{builder.builder_config.name} has no such '
                            f'split; it has {", ".join(builder.info.splits)}.')
  source = builder.as_data_source(split=split, decoders={'image': tfds.decode.SkipDecoding()})
  items = []
  for index in range(len(source)):
    record = source[index]
    text = record['source']
    text = text.decode() if isinstance(text, bytes) else str(text)
    items.append(Item(text, int(record['label']), f'{split}[{index}] ({text})',
                      _record_reader(source, index)))
  return items


def _record_reader(source, index: int) -> Callable[[], bytes]:
  return lambda: source[index]['image']


def read_features(items: list[Item]) -> tuple[list[Item], list[str]]:
  """Reads each item's container features -> (the readable items, one message per failure)."""
  good, failed = [], []
  for item in items:
    try:
      item.features = container_features(item.load())
      good.append(item)
    except images_lib.ImageReadError as e:
      failed.append(f'{item.name}: {e}')
  return good, failed


# ---------------------------------------------------------------------------------- summaries


def _counts(values) -> dict:
  return dict(collections.Counter(map(str, values)).most_common())


def summarise(items: list[Item]) -> dict:
  """Per source (in order of first appearance): count, label, and each container feature's
  values with their counts; file sizes as quantiles (bytes)."""
  by_source = collections.defaultdict(list)
  for item in items:
    by_source[item.source].append(item)
  summary = {}
  for source, group in by_source.items():
    sizes = np.array([i.features['file_size'] for i in group], np.float64)
    entry = {'label': 'fake' if group[0].label else 'real', 'images': len(group)}
    for feature in CONTAINER_FEATURES:
      entry[feature] = _counts(i.features[feature] for i in group)
    entry['file_size'] = {q: float(np.quantile(sizes, p)) for q, p in
                          (('min', 0), ('q25', .25), ('median', .5), ('q75', .75), ('max', 1))}
    entry['bits_per_pixel_median'] = float(np.median([i.features['bits_per_pixel']
                                                      for i in group]))
    summary[source] = entry
  return summary


# ------------------------------------------------------------------------------- separability


def _lookup_predict(x_train, y_train, x_test) -> np.ndarray:
  """One categorical feature (integer codes): each value -> the class it is relatively more
  frequent in (class sizes balanced); ties and values unseen in training -> class 0."""
  size = int(max(x_train.max(), x_test.max())) + 1
  ones = np.bincount(x_train[y_train == 1], minlength=size) / max(1, (y_train == 1).sum())
  zeros = np.bincount(x_train[y_train == 0], minlength=size) / max(1, (y_train == 0).sum())
  return (ones > zeros).astype(np.int64)[x_test]


def _codes(values) -> np.ndarray:
  """Categorical values -> integer codes (the classifiers compare them only for equality)."""
  _, inverse = np.unique(np.array(list(map(str, values))), return_inverse=True)
  return inverse.ravel()


def _classifier(items, features):
  """-> predict(train_index, test_index, y) for the feature(s): a lookup table on the value of
  the container feature(s) (of all of them together: on their joint value); for one content
  feature, a lookup table on its bin among CONTENT_BINS quantiles of the training folds. Numpy
  only: the permutation test refits it PERMUTATIONS x folds times per feature."""
  if all(f in CONTAINER_FEATURES for f in features):
    codes = _codes(tuple(str(i.features[f]) for f in features) for i in items)
    return lambda train, test, y: _lookup_predict(codes[train], y[train], codes[test])
  x = np.array([float(i.features[features[0]]) for i in items])

  def predict(train, test, y):
    edges = np.unique(np.quantile(x[train], np.linspace(0, 1, CONTENT_BINS + 1)[1:-1]))
    return _lookup_predict(np.searchsorted(edges, x[train]), y[train],
                           np.searchsorted(edges, x[test]))
  return predict


def _balanced_accuracy(y, predicted) -> float:
  return 0.5 * (np.mean(predicted[y == 1] == 1) + np.mean(predicted[y == 0] == 0))


def check(items: list[Item], y: np.ndarray, features: tuple[str, ...],
          permutations: int = PERMUTATIONS) -> dict:
  """Cross-validated balanced accuracy (of the out-of-fold predictions) of a container-feature
  classifier (see the module docstring) -> {'balanced_accuracy', 'p_value', 'flagged'}. The
  p-value, (1 + shuffles scoring at least as well) / (1 + PERMUTATIONS), with the labels shuffled
  (fixed seed) and the folds kept, is computed only when the accuracy reaches FLAG_ACCURACY."""
  from sklearn.model_selection import StratifiedKFold
  y = np.asarray(y, np.int64)
  folds = min(FOLDS, int(np.bincount(y, minlength=2).min()))
  if folds < 2:
    return {'balanced_accuracy': None, 'p_value': None, 'flagged': False,
            'note': 'too few images in the smaller class (needs 2)'}
  predict = _classifier(items, features)
  splits = list(StratifiedKFold(folds, shuffle=True, random_state=SEED).split(np.zeros(len(y)), y))

  def score(labels):  # of the pooled out-of-fold predictions: every image predicted once
    predicted = np.zeros(len(labels), np.int64)
    for train, test in splits:
      predicted[test] = predict(train, test, labels)
    return float(_balanced_accuracy(labels, predicted))

  accuracy = score(y)
  p_value = None
  if accuracy >= FLAG_ACCURACY:
    rng = np.random.default_rng(SEED)
    beaten = sum(score(rng.permutation(y)) >= accuracy for _ in range(permutations))
    p_value = (1 + beaten) / (1 + permutations)
  return {'balanced_accuracy': round(accuracy, 4), 'p_value': p_value,
          'flagged': bool(p_value is not None and p_value <= FLAG_P)}


def _describe(items, y, feature: str, names: tuple[str, str]) -> str:
  """How a feature differs between the two sides: 'PNG for every fake; JPEG for every real'."""
  parts = []
  for side, name in ((1, names[1]), (0, names[0])):
    values = [i.features[feature] for i, label in zip(items, y) if label == side]
    if feature in CONTENT_FEATURES:
      q25, q50, q75 = np.quantile(np.array(values, np.float64), [.25, .5, .75])
      unit = ' bytes' if feature == 'file_size' else ''
      parts.append(f'{name} median {q50:.4g}{unit} (quartiles {q25:.4g}-{q75:.4g})')
      continue
    counts = collections.Counter(map(str, values)).most_common()
    if len(counts) == 1:
      parts.append(f'{counts[0][0]} for every {name} image')
    else:
      shown = ', '.join(f'{v} {100 * c / len(values):.0f}%' for v, c in counts[:3])
      more = f', {len(counts) - 3} more values' if len(counts) > 3 else ''
      parts.append(f'{name}: {shown}{more}')
  return f'{feature}: ' + '; '.join(parts)


def separability(items: list[Item], permutations: int = PERMUTATIONS) -> list[dict]:
  """The questions real vs fake and, with 3 or more sources, each source vs the other sources ->
  one record each: the classifier on all container features, one per feature, and `flags`:
  one line per flagged container feature (or the combination, when no single one is), and
  `content_flags`: file_size / bits_per_pixel when they separate (not a container shortcut on
  their own: they follow the pixels; the user judges)."""
  questions = [('real vs fake', np.array([i.label for i in items]), ('real', 'fake'))]
  sources = list(dict.fromkeys(i.source for i in items))
  if len(sources) >= 3:
    for source in sources:
      questions.append((f'{source} vs the other sources',
                        np.array([int(i.source == source) for i in items]), ('other', source)))
  results = []
  for question, y, names in questions:
    if len(np.unique(y)) < 2:
      continue
    result = {'question': question, 'counts': {names[0]: int(len(y) - y.sum()),
                                               names[1]: int(y.sum())},
              'all_container_features': check(items, y, CONTAINER_FEATURES, permutations),
              'features': {}, 'flags': [], 'content_flags': []}
    for feature in CONTAINER_FEATURES + CONTENT_FEATURES:
      one = check(items, y, (feature,), permutations)
      result['features'][feature] = one
      if one['flagged']:
        line = (f'{_describe(items, y, feature, names)} (balanced accuracy '
                f'{one["balanced_accuracy"]:.2f}, p {one["p_value"]:.3f})')
        (result['content_flags'] if feature in CONTENT_FEATURES else result['flags']).append(line)
    combined = result['all_container_features']
    if combined['flagged'] and not result['flags']:
      result['flags'].append(f'the container features together (no single one) (balanced '
                             f'accuracy {combined["balanced_accuracy"]:.2f}, p '
                             f'{combined["p_value"]:.3f})')
    results.append(result)
  return results


def audit(items: list[Item], permutations: int = PERMUTATIONS) -> dict:
  """Items with features read -> {'images', 'summary', 'checks', 'flagged'}."""
  checks = separability(items, permutations)
  return {'images': len(items), 'summary': summarise(items), 'checks': checks,
          'flagged': any(c['flags'] for c in checks),
          'rule': {'balanced_accuracy_at_least': FLAG_ACCURACY, 'p_at_most': FLAG_P,
                   'permutations': permutations, 'folds': FOLDS, 'seed': SEED}}


# ---------------------------------------------------------------------------------- flip test

VARIANTS = ('png', 'jpeg95', 'jpeg75', 'resize0.9', 'crop8')


def reencode(rgb: np.ndarray, variant: str) -> tuple[bytes, str]:
  """[H, W, 3] uint8 -> (the re-encoded file's bytes, its suffix):
  png: a PNG of the pixels (lossless: the control; a change means the reading differs);
  jpeg95, jpeg75: PIL JPEG at that quality, 4:2:0 (augment.jpeg_bytes, the perturbation's);
  resize0.9: OpenCV INTER_CUBIC (augment.crop's resize) to round(0.9 W) x round(0.9 H), as PNG;
  crop8: 8 pixels cut off the bottom and the right (top-left corner kept, so the 8x8 grid keeps
  its phase), as PNG."""
  if variant in ('jpeg95', 'jpeg75'):
    return augment.jpeg_bytes(rgb, int(variant[4:])), '.jpg'
  if variant == 'resize0.9':
    height, width = rgb.shape[:2]
    rgb = cv2.resize(rgb, (max(1, round(0.9 * width)), max(1, round(0.9 * height))),
                     interpolation=cv2.INTER_CUBIC)
  elif variant == 'crop8':
    rgb = rgb[:max(1, rgb.shape[0] - 8), :max(1, rgb.shape[1] - 8)]
  elif variant != 'png':
    raise ValueError(f'unknown re-encoding {variant!r}; choose from {", ".join(VARIANTS)}')
  buffer = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format='PNG')
  return buffer.getvalue(), '.png'


def flip_test(model, items: list[Item], per_source: int = 200,
              variants: tuple[str, ...] = VARIANTS) -> dict:
  """Scores the first `per_source` images of each source as they are and re-encoded each way
  (`reencode`), with attribute's code (gta_jax.scoring.inference.attribute: its reading, input
  preparation, batching and verdicts) -> per source and re-encoding: how many verdict strings
  changed, how many primary calls crossed the threshold (to fake, to real), the mean |change| of
  p_fake, and images the variant could not be scored (e.g. a DCT model given a smaller image)."""
  from gta_jax.scoring import inference
  from gta_jax.scoring import verdicts
  chosen = collections.defaultdict(list)
  for item in items:
    if len(chosen[item.source]) < per_source:
      chosen[item.source].append(item)
  with tempfile.TemporaryDirectory(prefix='gta_audit_flip_') as tmp:
    tmp = pathlib.Path(tmp)
    paths, where, unread = [], [], []
    for source, group in chosen.items():
      for n, item in enumerate(group):
        stem = tmp / f'{len(where):06d}'
        try:
          data = item.load()
          fmt = container_features(data)['format']
        except images_lib.ImageReadError as e:
          unread.append(f'{item.name}: {e}')
          continue
        suffix = {'JPEG': '.jpg', 'PNG': '.png', 'WEBP': '.webp', 'BMP': '.bmp',
                  'TIFF': '.tif', 'GIF': '.gif'}.get(fmt, '.img')
        original = stem.with_name(stem.name + '_original' + suffix)
        original.write_bytes(data)
        try:
          rgb, _ = images_lib.read_rgb(original)
        except images_lib.ImageReadError as e:
          unread.append(f'{item.name}: {e}')
          continue
        entry = {'original': len(paths)}
        paths.append(original)
        for variant in variants:
          encoded, suffix = reencode(rgb, variant)
          path = stem.with_name(f'{stem.name}_{variant}{suffix}')
          path.write_bytes(encoded)
          entry[variant] = len(paths)
          paths.append(path)
        where.append((source, item.label, entry))
    records = inference.attribute(model, paths)
  thresholds = model.thresholds
  result = {}
  for source, label, entry in where:
    out = result.setdefault(source, {'label': 'fake' if label else 'real', 'images': 0,
                                     'original_errors': 0, 'called_fake': 0,
                                     'variants': {v: {'verdict_changed': 0, 'fake_call_changed': 0,
                                                      'to_fake': 0, 'to_real': 0, 'errors': 0,
                                                      'scored': 0, 'mean_abs_dp_fake': 0.0}
                                                  for v in variants}})
    out['images'] += 1
    base = records[entry['original']]
    if base['error']:
      out['original_errors'] += 1
      continue
    base_fake = bool(verdicts.called_fake(base['p_fake'], thresholds))
    out['called_fake'] += base_fake
    for variant in variants:
      stats = out['variants'][variant]
      record = records[entry[variant]]
      if record['error']:
        stats['errors'] += 1
        continue
      fake = bool(verdicts.called_fake(record['p_fake'], thresholds))
      stats['scored'] += 1
      stats['verdict_changed'] += record['verdict'] != base['verdict']
      stats['fake_call_changed'] += fake != base_fake
      stats['to_fake'] += fake and not base_fake
      stats['to_real'] += base_fake and not fake
      stats['mean_abs_dp_fake'] += abs(record['p_fake'] - base['p_fake'])
  for out in result.values():
    for stats in out['variants'].values():
      stats['mean_abs_dp_fake'] = round(stats['mean_abs_dp_fake'] / max(1, stats['scored']), 5)
  return {'per_source': per_source, 'variants': list(variants), 'sources': result,
          'thresholds': thresholds.to_json(), 'open_set': model.open_set, 'unread': unread}


# ---------------------------------------------------------------------------------- the report


def format_report(report: dict) -> str:
  lines = [f'{report["images"]} images, {len(report["summary"])} sources', '']
  header = (f'{"source":<24} {"label":<5} {"n":>6}  {"format":<16} {"size":<22} {"quality":<16} '
            f'{"subsampling":<14} {"bits":<6} {"exif":<6} {"icc":<6} file size median (q25-q75)')
  lines += [header, '-' * len(header)]

  def short(counts, width):
    text = ', '.join(f'{v} {c}' if len(counts) > 1 else v for v, c in list(counts.items())[:2])
    if len(counts) > 2:
      text += f' +{len(counts) - 2}'
    return text[:width]

  for source, s in report['summary'].items():
    fs = s['file_size']
    lines.append(
        f'{source[:24]:<24} {s["label"]:<5} {s["images"]:>6}  {short(s["format"], 16):<16} '
        f'{short(s["size"], 22):<22} {short(s["jpeg_quality"], 16):<16} '
        f'{short(s["subsampling"], 14):<14} {short(s["bit_depth"], 6):<6} '
        f'{short(s["exif"], 6):<6} {short(s["icc"], 6):<6} '
        f'{fs["median"]:.0f} ({fs["q25"]:.0f}-{fs["q75"]:.0f})')
  lines.append('')
  lines.append(f'separability (cross-validated balanced accuracy, chance 0.5; flagged at >= '
               f'{FLAG_ACCURACY} and permutation p <= {FLAG_P}):')
  for c in report['checks']:
    combined = c['all_container_features']
    accuracy = combined['balanced_accuracy']
    best = max(((f, r['balanced_accuracy']) for f, r in c['features'].items()
                if f in CONTAINER_FEATURES and r['balanced_accuracy'] is not None),
               key=lambda t: t[1], default=(None, None))
    counts = ', '.join(f'{n} {name}' for name, n in c['counts'].items())
    lines.append(f'  {c["question"]} ({counts}): all container '
                 'features ' + ('-' if accuracy is None else f'{accuracy:.2f}')
                 + (f', best single {best[0]} {best[1]:.2f}' if best[0] else '')
                 + (f'  [{combined["note"]}]' if combined.get('note') else ''))
    for flag in c['flags']:
      lines.append(f'    FLAG {flag}')
    for flag in c['content_flags']:
      lines.append(f'    note (content-dependent) {flag}')
  if not report['checks']:
    lines.append('  nothing to compare: the images are all real or all fake, from one source.')
  lines.append('')
  lines.append('FLAGGED: a container feature separates the classes; a network may learn it instead '
               'of the generator.' if report['flagged'] else
               'nothing flagged: no container feature separates real from fake or one source '
               'from the others better than chance.')
  flip = report.get('flip_test')
  if flip:
    lines += ['', f'flip test (first {flip["per_source"]} images per source; changed verdicts / '
              'primary calls crossing the threshold, of those scored):']
    head = f'{"source":<24} {"label":<5} {"n":>5} {"fake":>5}' + ''.join(
        f'  {v:>14}' for v in flip['variants'])
    lines += [head, '-' * len(head)]
    for source, s in flip['sources'].items():
      cells = ''
      for v in flip['variants']:
        st = s['variants'][v]
        cell = f'{st["verdict_changed"]}/{st["fake_call_changed"]}'
        if st['errors']:
          cell += f' e{st["errors"]}'
        cells += f'  {cell:>14}'
      lines.append(f'{source[:24]:<24} {s["label"]:<5} {s["images"]:>5} {s["called_fake"]:>5}'
                   + cells)
  return '\n'.join(lines)
