"""Inference of a detector (+ attribution heads) on images of any size: loading a model (release
.h5, bundle or run), preparing inputs, bucketing images by size within memory limits, scores,
verdicts and saliency maps. What `attribute`, `heldout` and `report` share."""
import dataclasses
import functools
import os
import pathlib

import jax
import numpy as np
from PIL import Image

from gta_jax import errors
from gta_jax.data import images as images_lib
from gta_jax.io import checkpoints
from gta_jax.io import composition
from gta_jax.io import outputs
from gta_jax.io import progress
from gta_jax.models import frequency
from gta_jax.models import networks
from gta_jax.models import spectral
from gta_jax.scoring import calibration as calibration_lib
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
  banks: dict = dataclasses.field(default_factory=dict)  # kNN banks, {file name: array}
  knn: openset.GroupedKnn | None = None  # with --open-set knn
  origin: str = ''  # the model(s) as the user named them
  # Temperatures fitted on validation (the bundle's): reported probabilities are calibrated with
  # them; verdicts always come from the scores as they are, at the configured thresholds.
  calibration: calibration_lib.Calibration | None = None

  def use_calibration(self, on: bool) -> None:
    """Report calibrated probabilities when the bundle has temperatures (on) or never (off)."""
    stored = calibration_lib.Calibration.from_json(self.spec.calibration, len(self.spec.head_names))
    self.calibration = stored if on else None

  def describe_calibration(self) -> str | None:
    """The header line attribute prints, None when the probabilities are reported as they are."""
    described = self.calibration.describe(self.spec.head_names) if self.calibration else ''
    if not described:
      return None
    fit = next((r['fit'] for r in (self.calibration.detection, *self.calibration.heads)
                if r and r.get('fit')), {})
    missing = [n for n, r in zip(self.spec.head_names, self.calibration.heads)
               if not r or r.get('temperature') is None]
    return ('probabilities calibrated by temperature scaling (' + described
            + (f'; fitted on {fit.get("split")} ({fit.get("mode")})' if fit else '')
            + (f'; {", ".join(missing)} as they are (no temperature)' if missing else '')
            + '); verdicts use the scores as they are, at the model\'s thresholds '
              '(--uncalibrated reports those scores)')

  def calibrated(self, scores: list[float]) -> list[float]:
    """[p_fake, p_head...] -> the same calibrated (each output with its own temperature)."""
    if self.calibration is None:
      return scores
    return [float(calibration_lib.scaled(p, self.calibration.temperature(i)))
            for i, p in enumerate(scores)]

  @property
  def thresholds(self) -> verdicts.Thresholds:
    """What the outputs claim at: the bundle's (0.5 for release .h5 files, as the release), with
    the heads' calibrated open-set thresholds when `open_set` is tpr95 or doc."""
    stored = verdicts.Thresholds.from_json(self.spec.thresholds)
    if self.open_set in (None, 'knn'):
      return stored
    return verdicts.Thresholds(stored.fake, tuple(self.spec.open_set[self.open_set]))

  def available_open_set(self) -> list[str]:
    """The open-set calibrations every head of the model has (a composed model: all its runs)."""
    fitted = self.spec.open_set or {}
    if not self.spec.head_names:
      return []
    methods = [m for m in ('tpr95', 'doc') if m in fitted]
    covered = {h for g in openset.knn_records(self.spec) for h in g['heads']}
    if covered and covered == set(self.spec.head_names):
      methods.insert(0, 'knn')
    return methods

  def use_open_set(self, method: str) -> None:
    """'tpr95' | 'doc' | 'knn' | 'off' | 'auto': the kNN calibration when every head has one
    (it keeps 99% of known fakes, within the 0.02 of closed-set accuracy a calibration may cost),
    else tpr95 when the model has fitted thresholds, else off."""
    available = self.available_open_set()
    if method == 'auto':
      method = next((m for m in ('knn', 'tpr95') if m in available), 'off')
    if method != 'off' and method not in available:
      partial = method == 'knn' and openset.knn_records(self.spec)
      raise errors.UsageError(
          f'--open-set {method}: ' + (
              'not every head of the model has a kNN calibration (one was dropped when a head '
              'fitted with it was removed); use --open-set tpr95, or refit and enrol that run '
              'again.' if partial else
              f'the model has no {method} calibration; fit it with `python -m gta_jax.openset '
              '--workdir RUN --fit`, or pass --open-set off.'
              + (' A composed model keeps a run\'s kNN calibration only while every head it was '
                 'fitted with is enrolled.' if self.spec.composed and method == 'knn' else '')))
    if method == 'knn':
      self.knn = openset.load_knn_groups(self.spec, self.banks, self.origin)
    self.open_set = None if method == 'off' else method


def load_model(path, dct_stats_dir=None) -> LoadedModel:
  """A release .h5, a model bundle, or a run workdir with model/ -> LoadedModel. Several paths
  (a list) are composed into one model: the first's primary with every model's heads, each of
  which must have been trained on that primary (gta_jax/io/composition.py)."""
  paths = [path] if isinstance(path, (str, pathlib.Path)) else list(path)
  parts = [composition.read(p) for p in paths]
  for part in parts:
    if part.spec.arch != 'proposed':
      raise errors.UsageError(f'{part.origin} is a {part.spec.arch} baseline ({part.spec.task}); '
                              'attribute scores the proposed detector and its heads. Evaluate '
                              'baselines with their run.')
  model = composition.compose(parts[0], parts[1:]) if len(parts) > 1 else parts[0]
  spec, variables, stats = model.spec, model.variables, model.dct_stats
  origin = ' + '.join(str(p) for p in paths)
  if dct_stats_dir:
    stats = spectral.load_dct_stats(dct_stats_dir)
  if spec.input_kind == 'dct':
    if stats is None:
      raise errors.UsageError(f'{origin} is a DCT model: pass --dct-stats DIR (mean.npy, std_dev.npy of its '
                       'training set, e.g. the release\'s dataset/statistics/ganfp/dctnorm).')
    if stats[0].shape != (spec.image_size, spec.image_size):
      raise errors.UsageError(f'DCT statistics are {stats[0].shape} but the model takes '
                       f'{spec.image_size}x{spec.image_size} inputs.')
    return LoadedModel(spec, variables, np.asarray(stats[0], np.float32),
                       np.asarray(stats[1], np.float32), banks=model.banks, origin=origin)
  return LoadedModel(spec, variables, banks=model.banks, origin=origin)


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


def score_batch(variables, x, *, input_kind: str, num_heads: int, with_saliency: bool,
                valid_size=None, frequency_inputs: tuple[str, ...] = (),
                with_features: bool = False):
  """-> (p_fake [B], p_heads [K, B], saliency maps [1 + K, B, h, w] or None, pooled features
  [B, 16 + 32K] (networks.pooled_features, for the kNN score) or None).

  valid_size: [B, 2] rows, cols of each image in a zero-padded batch of mixed sizes (pixel
  models); each image's scores and features are then those it gets alone, and its maps are zero
  beyond ceil(rows / 8) x ceil(cols / 8).

  The primary runs as one compiled program and each head as another, the same program for every
  head, on the primary's features, and saliency maps and pooled features come from outputs those
  programs always return: a head's outputs are bit for bit those it gives in any model holding
  it, whatever other heads are enrolled and whatever else is asked for (the composition
  invariance tests/scoring/test_composition.py checks). The cost is one dispatch per head.
  """
  if num_heads and 'heads' not in variables:
    raise errors.ConfigError(f'{num_heads} heads named but the weights hold none.')
  gap = networks.uses_gap(input_kind)
  p_fake, primary_final, mid, mid_pooled = _score_primary(
      variables['primary'], x, input_kind=input_kind, valid_size=valid_size)
  heads = []
  for k in range(num_heads):
    one = checkpoints.head_variables(variables['heads'], k)
    heads.append((one, *_score_head(one, mid, x, input_kind=input_kind, valid_size=valid_size,
                                    frequency_inputs=frequency_inputs)))
  p_heads = (jax.numpy.stack([h[1] for h in heads]) if heads
             else jax.numpy.zeros((0, x.shape[0]), jax.numpy.float32))
  maps = None
  if with_saliency:  # from the outputs' final features: the scores' programs stay the same
    maps = jax.numpy.stack(
        [_saliency_map(primary_final, variables['primary']['params']['decision'], gap=gap)]
        + [_saliency_map(final, jax.tree.map(lambda a: a[0], one['params']['heads']['decision']),
                         gap=gap) for one, _, final, _ in heads])
  features = (jax.numpy.concatenate([mid_pooled] + [h[3] for h in heads], axis=1)
              if with_features else None)
  return p_fake, p_heads, maps, features


@functools.partial(jax.jit, static_argnames=('input_kind',))
def _score_primary(primary_variables, x, *, input_kind: str, valid_size=None):
  """-> (p_fake [B], final features [B, h, w, 32], mid features, pooled mid features [B, 16])."""
  out = networks.Primary(networks.uses_gap(input_kind)).apply(
      primary_variables, x, train=False, valid_size=valid_size)
  pooled = networks.global_average(out.mid_features, networks.strided_size(valid_size, 4))
  return jax.nn.sigmoid(out.logit), out.final_features, out.mid_features, pooled


@functools.partial(jax.jit, static_argnames=('input_kind', 'frequency_inputs'))
def _score_head(head_variables, mid_features, x, *, input_kind: str, valid_size=None,
                frequency_inputs: tuple[str, ...] = ()):
  """One head (variables with a leading axis of 1) -> (p [B], final features [B, h, w, 32],
  pooled final features [B, 32])."""
  out = networks.StackedHeads(1, networks.uses_gap(input_kind)).apply(
      head_variables, networks.head_inputs(mid_features, x, frequency_inputs, valid_size),
      train=False, valid_size=networks.strided_size(networks.strided_size(valid_size, 2), 2))
  final = out.final_features[0]
  pooled = networks.global_average(final, networks.strided_size(valid_size, 8))
  return jax.nn.sigmoid(out.logit[0]), final, pooled


@functools.partial(jax.jit, static_argnames=('gap',))
def _saliency_map(final_features, decision_params, *, gap: bool):
  return _saliency(final_features, decision_params, gap)


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
  names = overlay_names(paths) if cam_dir is not None else None
  scorer = functools.partial(_score_bucket, model, records, paths, cam_dir, cam_scale, names)

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
  if cam_dir is not None:  # which overlay shows which input (none for a file not scored)
    for record in records:
      record.setdefault('overlay', None)
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
                  names, shape: tuple, items: list[_Pending], capacity: int) -> None:
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
  knn_scores, knn_thresholds = (model.knn(features[:len(items)]) if model.knn is not None
                                else (None, None))
  for row, item in enumerate(items):
    path = paths[item.index]
    scores = [float(p_fake[row])] + [float(p) for p in p_heads[:, row]]
    if not all(np.isfinite(scores)):
      records[item.index] = _error_record(
          path, f'{path}: the model gave a non-finite score (NaN or infinity); its weights or '
          'statistics are broken')
      continue
    heads = dict(zip(spec.head_names, scores[1:]))
    if knn_scores is not None:  # known when any enrolled run's calibration accepts it
      margins = knn_scores[:, row] - knn_thresholds
      best = int(np.argmax(margins))
    known = knn_scores is None or bool(np.any(knn_scores[:, row] >= knn_thresholds))
    reported = model.calibrated(scores)
    records[item.index] = {'path': images_lib.printable(path), 'p_fake': reported[0],
                           'p_heads': dict(zip(spec.head_names, reported[1:])),
                           'verdict': verdicts.verdict(scores[0], heads, model.thresholds,
                                                       open_set=model.open_set is not None,
                                                       known=known),
                           'error': None, 'notes': item.notes}
    if model.calibration is not None:  # an added field: what the verdict read
      records[item.index]['uncalibrated'] = {'p_fake': scores[0], 'p_heads': heads}
    if knn_scores is not None:  # an added field: the records' others are unchanged
      # The calibration that accepts the image most (or rejects it least); a composed model's
      # every calibration beside it.
      score = {'knn': float(knn_scores[best, row]), 'threshold': float(knn_thresholds[best])}
      if len(model.knn.groups) > 1:
        score['heads'] = list(model.knn.groups[best].heads)
        score['groups'] = [{'heads': list(g.heads), 'knn': float(knn_scores[i, row]),
                            'threshold': g.threshold} for i, g in enumerate(model.knn.groups)]
      records[item.index]['open_set_score'] = score
    if cam_dir is not None:
      rows, cols = -(-item.x.shape[0] // 8), -(-item.x.shape[1] // 8)
      item_maps = maps[:, row, :rows, :cols] if spec.input_kind == 'pixel' else maps[:, row]
      out = pathlib.Path(cam_dir) / names[item.index]
      _write_overlay(out, item.shown, item_maps, records[item.index], model, cam_scale)
      records[item.index]['overlay'] = images_lib.printable(out)


def overlay_names(paths) -> list[str]:
  """Each input's overlay, unique by construction: its path relative to the folder holding every
  input, with `_cam.png` added to the whole file name (a/x.png -> a/x.png_cam.png; x.png and
  x.jpg in one folder keep apart, and no name can be another input's with a counter)."""
  absolute = [pathlib.Path(os.path.abspath(p)) for p in paths]
  if not absolute:
    return []
  root = pathlib.Path(os.path.commonpath([p.parent for p in absolute]))
  return [(p.relative_to(root).parent / f'{p.name}_cam.png').as_posix() for p in absolute]


def _write_overlay(out: pathlib.Path, shown: np.ndarray, maps: np.ndarray, record: dict,
                   model: LoadedModel, cam_scale: str) -> None:
  """One PNG per image: primary panel, then one per head, side by side (as the release)."""
  background = shown if model.spec.input_kind == 'pixel' else saliency.spectrum_image(shown)
  p_fake = record['p_fake']
  called_fake = verdicts.called_fake(record.get('uncalibrated', record)['p_fake'], model.thresholds)
  labels = [f'FAKE:{100 * p_fake:.1f}%' if called_fake else f'REAL:{100 * (1 - p_fake):.1f}%']
  labels += [f'{name}:{100 * p:.1f}%' for name, p in record['p_heads'].items()]
  panels = [saliency.overlay(background, m, label, cam_scale) for m, label in zip(maps, labels)]
  with outputs.staged(out) as staging:  # a reader never sees half an overlay
    Image.fromarray(np.concatenate(panels, axis=1)).save(staging, format='PNG')


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
