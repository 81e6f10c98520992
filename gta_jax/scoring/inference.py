"""Inference of a detector (+ attribution heads) on images of any size: loading a model (release
.h5, bundle or run), preparing inputs, bucketing images by size within memory limits, scores,
verdicts and saliency maps. What `attribute`, `heldout` and `report` share."""
import dataclasses
import functools
import pathlib

import jax
import numpy as np
from PIL import Image

from gta_jax import errors
from gta_jax.data import images as images_lib
from gta_jax.io import checkpoints
from gta_jax.io import keras_import
from gta_jax.io import progress
from gta_jax.models import frequency
from gta_jax.models import networks
from gta_jax.models import spectral
from gta_jax.scoring import openset
from gta_jax.scoring import saliency
from gta_jax.scoring import verdicts

# Smaller sides leave the decision layer one or two cells of evidence: refused, not scored.
MIN_SIDE = 16


@dataclasses.dataclass
class LoadedModel:
  spec: checkpoints.ModelSpec
  variables: dict
  dct_mean: np.ndarray | None = None
  dct_std: np.ndarray | None = None
  # 'tpr95' | 'doc': heads claim at these calibrated thresholds; 'knn': heads claim at the
  # bundle's thresholds (0.5) and a fake whose pooled features lie beyond the kNN threshold is
  # unknown, as is one no head claims.
  open_set: str | None = None
  bundle: pathlib.Path | None = None  # the model bundle folder (None for a release .h5)
  knn: object | None = None  # openset.NearestNeighbours, with --open-set knn
  knn_threshold: float | None = None

  @property
  def thresholds(self) -> verdicts.Thresholds:
    """What the outputs claim at: the bundle's (0.5 for release .h5 files, as the release), with
    the heads' calibrated open-set thresholds when `open_set` is tpr95 or doc."""
    stored = verdicts.Thresholds.from_json(self.spec.thresholds)
    if self.open_set in (None, 'knn'):
      return stored
    return verdicts.Thresholds(stored.fake, tuple(self.spec.open_set[self.open_set]))

  def use_open_set(self, method: str) -> None:
    """'tpr95' | 'doc' | 'knn' | 'off' | 'auto': the kNN calibration when the bundle has one
    (it keeps 99% of known fakes, within the 0.02 of closed-set accuracy a calibration may cost),
    else tpr95 when the bundle has fitted thresholds, else off."""
    fitted = self.spec.open_set or {}
    if method == 'auto':
      method = next((m for m in ('knn', 'tpr95') if m in fitted and self.spec.head_names), 'off')
    if method != 'off' and method not in fitted:
      raise errors.UsageError(f'--open-set {method}: the model has no {method} calibration; fit it with '
                       '`python -m gta_jax.openset --workdir RUN --fit`, or pass --open-set off.')
    if method == 'knn':
      self.knn, self.knn_threshold = openset.load_knn(self.bundle, self.spec)
    self.open_set = None if method == 'off' else method


def load_model(path, dct_stats_dir=None) -> LoadedModel:
  """A release .h5, a model bundle, or a run workdir with model/ -> LoadedModel."""
  path = pathlib.Path(path)
  try:
    loaded = keras_import.load_any(path)
  except keras_import.H5ImportError as e:
    raise errors.UsageError(str(e)) from None
  if loaded is None:
    raise errors.UsageError(
        f'--model {path}: expected a release .h5 file, a model bundle folder (with model.json, '
        'written by `python -m gta_jax.keras_import` or by a training run), or a run workdir '
        'holding one in model/.')
  spec, variables, stats = loaded
  bundle = next((b for b in (path, path / 'model') if checkpoints.is_model_bundle(b)), None)
  if spec.arch != 'proposed':
    raise errors.UsageError(f'{path} is a {spec.arch} baseline ({spec.task}); attribute scores the '
                     'proposed detector and its heads. Evaluate baselines with their run.')
  if dct_stats_dir:
    stats = spectral.load_dct_stats(dct_stats_dir)
  if spec.input_kind == 'dct':
    if stats is None:
      raise errors.UsageError(f'{path} is a DCT model: pass --dct-stats DIR (mean.npy, std_dev.npy of its '
                       'training set, e.g. the release\'s dataset/statistics/ganfp/dctnorm).')
    if stats[0].shape != (spec.image_size, spec.image_size):
      raise errors.UsageError(f'DCT statistics are {stats[0].shape} but the model takes '
                       f'{spec.image_size}x{spec.image_size} inputs.')
    return LoadedModel(spec, variables, np.asarray(stats[0], np.float32),
                       np.asarray(stats[1], np.float32), bundle=bundle)
  return LoadedModel(spec, variables, bundle=bundle)


def prepare_input(model: LoadedModel, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """[H, W, 3] uint8 -> (network input [H', W', C] float32, the image it shows, notes)."""
  spec = model.spec
  notes = []
  if min(rgb.shape[:2]) < MIN_SIDE:
    raise images_lib.ImageReadError(
        f'{rgb.shape[1]}x{rgb.shape[0]} has a side under {MIN_SIDE} px: too small to score (the '
        'network reduces each side by 8)')
  if spec.input_kind == 'pixel':
    if rgb.shape[:2] != (spec.image_size, spec.image_size):
      notes.append(f'scored at {rgb.shape[1]}x{rgb.shape[0]}; model trained at '
                   f'{spec.image_size}x{spec.image_size}')
    return np.asarray(spectral.scale_pixels(rgb)), rgb, notes
  size = spec.image_size
  height, width = rgb.shape[:2]
  if height < size or width < size:
    raise images_lib.ImageReadError(
        f'{width}x{height} is smaller than the DCT model\'s {size}x{size} input; DCT models need '
        'their trained size')
  if (height, width) != (size, size):
    top, left = (height - size) // 2, (width - size) // 2
    rgb = rgb[top:top + size, left:left + size]
    notes.append(f'centre-cropped from {width}x{height} to {size}x{size}')
  # Float64 host DCT, as the release's data_prep: bit-faithful inputs for the imported weights.
  x = (spectral.log_dct_numpy(rgb) - model.dct_mean) / model.dct_std
  return x[..., None].astype(np.float32), rgb, notes


@functools.partial(jax.jit, static_argnames=('input_kind', 'num_heads', 'with_saliency',
                                             'frequency_inputs', 'with_features'))
def score_batch(variables, x, *, input_kind: str, num_heads: int, with_saliency: bool,
                valid_size=None, frequency_inputs: tuple[str, ...] = (),
                with_features: bool = False):
  """-> (p_fake [B], p_heads [K, B], saliency maps [1 + K, B, h, w] or None, pooled features
  [B, 16 + 32K] (networks.pooled_features, for the kNN score) or None).

  valid_size: [B, 2] rows, cols of each image in a zero-padded batch of mixed sizes (pixel
  models); each image's scores and features are then those it gets alone, and its maps are zero
  beyond ceil(rows / 8) x ceil(cols / 8).
  """
  out = networks.predict(variables, x, input_kind=input_kind, num_heads=num_heads,
                       valid_size=valid_size, frequency_inputs=frequency_inputs)
  gap = networks.uses_gap(input_kind)
  p_fake = jax.nn.sigmoid(out.primary.logit)
  p_heads = jax.nn.sigmoid(out.heads.logit) if num_heads else jax.numpy.zeros((0, x.shape[0]))
  maps = None
  if with_saliency:
    maps = [_saliency(out.primary.final_features, variables['primary']['params']['decision'], gap)]
    if num_heads:
      head_decisions = variables['heads']['params']['heads']['decision']
      maps += list(jax.vmap(lambda f, d: _saliency(f, d, gap))(out.heads.final_features,
                                                               head_decisions))
    maps = jax.numpy.stack(maps)
  features = networks.pooled_features(out, valid_size) if with_features else None
  return p_fake, p_heads, maps, features


def _saliency(final_features, decision_params, gap: bool):
  if gap:
    return saliency.cam(final_features, decision_params['dense']['kernel'])
  return saliency.grad_cam(final_features, decision_params, gap=False)


def _error_record(path, message: str) -> dict:
  return {'path': images_lib.printable(path), 'p_fake': None, 'p_heads': {}, 'verdict': 'error',
          'error': images_lib.printable(message), 'notes': []}


# Sides of the padded sizes images are batched at (each 1.5x the last): a folder of photos of
# many sizes compiles one program per bucket, not per size, and wastes under half a side.
_BUCKET_SIDES = sorted({base << shift for base in (32, 48) for shift in range(0, 12)})


def bucket_side(side: int) -> int:
  """The smallest bucket side holding `side` pixels."""
  for bucket in _BUCKET_SIDES:
    if bucket >= side:
      return bucket
  return side


@dataclasses.dataclass(frozen=True)
class MemoryLimits:
  """Bounds what attribute holds at once, in input pixels (see docs/attribution.md)."""
  # The largest image scored; larger ones get an error record (crop them into pieces).
  image_pixels: int = 4096 * 4096
  # Padded pixels per scored batch and read-but-unscored pixels held at once.
  batch_pixels: int = 2048 * 2048
  batch_images: int = 64


@dataclasses.dataclass
class _Pending:
  index: int
  x: np.ndarray
  shown: np.ndarray
  notes: list


def attribute(model: LoadedModel, paths, cam_dir=None, cam_scale: str = 'minmax',
              limits: MemoryLimits = MemoryLimits()) -> list[dict]:
  """Scores every image file; a file that cannot be scored gets an error record, never an abort.

  Files are read, scored and dropped a batch at a time: images wait in a bucket of padded size
  (pixel models; DCT models take one size) until the bucket fills `limits.batch_pixels`, or until
  everything waiting exceeds it, so memory stays bounded whatever the number and sizes of files.
  """
  records: list[dict | None] = [None] * len(paths)
  buckets: dict[tuple, list[_Pending]] = {}
  overlay_names = _overlay_names(paths) if cam_dir is not None else None
  scorer = functools.partial(_score_bucket, model, records, paths, cam_dir, cam_scale,
                             overlay_names)

  def waiting_pixels():
    return sum(_bucket_pixels(shape) * len(items) for shape, items in buckets.items())

  for index, path in progress.progress(enumerate(paths), total=len(paths), desc='attribute',
                                       unit='images'):
    try:
      rgb, notes = images_lib.read_rgb(path, max_pixels=limits.image_pixels)
      x, shown, more = prepare_input(model, rgb)
    except images_lib.ImageReadError as e:
      message = str(e) if str(path) in str(e) else f'{path}: {e}'
      records[index] = _error_record(path, message)
      continue
    shape = _bucket_shape(model, x.shape)
    buckets.setdefault(shape, []).append(_Pending(index, x, shown, notes + more))
    if len(buckets[shape]) >= _capacity(shape, limits):
      scorer(shape, buckets.pop(shape), _capacity(shape, limits))
    while buckets and waiting_pixels() > limits.batch_pixels:
      fullest = max(buckets, key=lambda s: _bucket_pixels(s) * len(buckets[s]))
      scorer(fullest, buckets.pop(fullest), _capacity(fullest, limits))
  for shape in list(buckets):
    scorer(shape, buckets.pop(shape), _capacity(shape, limits))
  return records


def _bucket_shape(model: LoadedModel, shape: tuple) -> tuple:
  if model.spec.input_kind != 'pixel' or frequency.needs_exact_size(
      model.spec.head_frequency_inputs):
    return shape  # one size: the trained one (DCT), or each image's own (a global spectrum)
  return (bucket_side(shape[0]), bucket_side(shape[1]), shape[2])


def _bucket_pixels(shape: tuple) -> int:
  return shape[0] * shape[1]


def _capacity(shape: tuple, limits: MemoryLimits) -> int:
  return max(1, min(limits.batch_images, limits.batch_pixels // _bucket_pixels(shape)))


def _score_bucket(model: LoadedModel, records: list, paths, cam_dir, cam_scale: str,
                  overlay_names, shape: tuple, items: list[_Pending], capacity: int) -> None:
  """Scores one bucket's images, padded to `shape` and to a power-of-two batch (few programs)."""
  spec = model.spec
  padded_batch = min(capacity, 1 << (len(items) - 1).bit_length())
  x = np.zeros((padded_batch, *shape), np.float32)
  valid = np.ones((padded_batch, 2), np.int32)
  for row, item in enumerate(items):
    x[row, :item.x.shape[0], :item.x.shape[1]] = item.x
    valid[row] = item.x.shape[:2]
  p_fake, p_heads, maps, features = jax.device_get(score_batch(
      model.variables, x, input_kind=spec.input_kind, num_heads=len(spec.head_names),
      with_saliency=cam_dir is not None,
      valid_size=valid if spec.input_kind == 'pixel' else None,
      frequency_inputs=spec.head_frequency_inputs, with_features=model.knn is not None))
  knn_scores = model.knn(features[:len(items)]) if model.knn is not None else None
  for row, item in enumerate(items):
    path = paths[item.index]
    scores = [float(p_fake[row])] + [float(p) for p in p_heads[:, row]]
    if not all(np.isfinite(scores)):
      records[item.index] = _error_record(
          path, f'{path}: the model gave a non-finite score (NaN or infinity); its weights or '
          'statistics are broken')
      continue
    heads = dict(zip(spec.head_names, scores[1:]))
    known = knn_scores is None or bool(knn_scores[row] >= model.knn_threshold)
    records[item.index] = {'path': images_lib.printable(path), 'p_fake': scores[0], 'p_heads': heads,
                           'verdict': verdicts.verdict(scores[0], heads, model.thresholds,
                                                       open_set=model.open_set is not None,
                                                       known=known),
                           'error': None, 'notes': item.notes}
    if knn_scores is not None:  # an added field: the records' others are unchanged
      records[item.index]['open_set_score'] = {'knn': float(knn_scores[row]),
                                               'threshold': model.knn_threshold}
    if cam_dir is not None:
      rows, cols = -(-item.x.shape[0] // 8), -(-item.x.shape[1] // 8)
      item_maps = maps[:, row, :rows, :cols] if spec.input_kind == 'pixel' else maps[:, row]
      _write_overlay(pathlib.Path(cam_dir) / overlay_names[item.index], item.shown, item_maps,
                     records[item.index], model, cam_scale)


def _overlay_names(paths) -> list[str]:
  """<stem>_cam.png per input; inputs sharing a stem (a/x.png, b/x.jpg) get <stem>_<n>_cam.png."""
  names, seen = [], {}
  for path in paths:
    stem = pathlib.Path(path).stem
    seen[stem] = seen.get(stem, 0) + 1
    names.append(f'{stem}_cam.png' if seen[stem] == 1 else f'{stem}_{seen[stem] - 1}_cam.png')
  return names


def _write_overlay(out: pathlib.Path, shown: np.ndarray, maps: np.ndarray, record: dict,
                   model: LoadedModel, cam_scale: str) -> None:
  """One PNG per image: primary panel, then one per head, side by side (as the release)."""
  background = shown if model.spec.input_kind == 'pixel' else saliency.spectrum_image(shown)
  p_fake = record['p_fake']
  labels = [f'FAKE:{100 * p_fake:.1f}%' if verdicts.called_fake(p_fake, model.thresholds)
            else f'REAL:{100 * (1 - p_fake):.1f}%']
  labels += [f'{name}:{100 * p:.1f}%' for name, p in record['p_heads'].items()]
  panels = [saliency.overlay(background, m, label, cam_scale) for m, label in zip(maps, labels)]
  out.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.concatenate(panels, axis=1)).save(out)


def format_table(records: list[dict], head_names) -> str:
  name_width = max([len('image')] + [len(pathlib.PurePath(r['path']).name) for r in records])
  header = f'{"image":<{name_width}}  {"p_fake":>7}' + ''.join(f'  {h[:10]:>10}' for h in head_names)
  lines = [header + '  verdict', '-' * (len(header) + 30)]
  for r in records:
    name = pathlib.PurePath(r['path']).name
    if r['error']:
      lines.append(f'{name:<{name_width}}  {"-":>7}' + ''.join(f'  {"-":>10}' for _ in head_names)
                   + f'  ERROR: {r["error"]}')
      continue
    line = f'{name:<{name_width}}  {r["p_fake"]:7.4f}'
    line += ''.join(f'  {r["p_heads"][h]:10.4f}' for h in head_names)
    line += f'  {r["verdict"]}'
    if r['notes']:
      line += f'  ({"; ".join(r["notes"])})'
    lines.append(line)
  return '\n'.join(lines)
