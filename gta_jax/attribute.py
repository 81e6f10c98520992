"""Score images with a detector (+ attribution heads): verdicts, probabilities, saliency overlays.

python -m gta_jax.attribute --model PATH [--dct-stats DIR] [--json OUT.json] [--cam-dir DIR] \
    IMAGE_OR_DIR...

PATH is a release .h5 file (imported on the fly), a model bundle folder (`keras_import` output or a
run's exported model), or a run workdir holding one in `model/`. Exit status: 0 when every image
was scored, 1 when some could not be, 2 on usage errors.
"""
import argparse
import dataclasses
import functools
import json
import pathlib
import sys

import jax
import numpy as np
from PIL import Image

from gta_jax import checkpoints
from gta_jax import images as images_lib
from gta_jax import keras_import
from gta_jax import models
from gta_jax import saliency
from gta_jax import spectral
from gta_jax import verdicts

BATCH_SIZE = 64


class UsageError(Exception):
  pass


@dataclasses.dataclass
class LoadedModel:
  spec: checkpoints.ModelSpec
  variables: dict
  dct_mean: np.ndarray | None = None
  dct_std: np.ndarray | None = None

  @property
  def thresholds(self) -> verdicts.Thresholds:
    """What the bundle's outputs claim at (0.5 for release .h5 files, as the release)."""
    return verdicts.Thresholds.from_json(self.spec.thresholds)


def load_model(path, dct_stats_dir=None) -> LoadedModel:
  """A release .h5, a model bundle, or a run workdir with model/ -> LoadedModel."""
  path = pathlib.Path(path)
  try:
    loaded = keras_import.load_any(path)
  except keras_import.H5ImportError as e:
    raise UsageError(str(e)) from None
  if loaded is None:
    raise UsageError(
        f'--model {path}: expected a release .h5 file, a model bundle folder (with model.json, '
        'written by `python -m gta_jax.keras_import` or by a training run), or a run workdir '
        'holding one in model/.')
  spec, variables, stats = loaded
  if spec.arch != 'proposed':
    raise UsageError(f'{path} is a {spec.arch} baseline ({spec.task}); attribute scores the '
                     'proposed detector and its heads. Evaluate baselines with their run.')
  if dct_stats_dir:
    stats = spectral.load_dct_stats(dct_stats_dir)
  if spec.input_kind == 'dct':
    if stats is None:
      raise UsageError(f'{path} is a DCT model: pass --dct-stats DIR (mean.npy, std_dev.npy of its '
                       'training set, e.g. the release\'s dataset/statistics/ganfp/dctnorm).')
    if stats[0].shape != (spec.image_size, spec.image_size):
      raise UsageError(f'DCT statistics are {stats[0].shape} but the model takes '
                       f'{spec.image_size}x{spec.image_size} inputs.')
    return LoadedModel(spec, variables, np.asarray(stats[0], np.float32),
                       np.asarray(stats[1], np.float32))
  return LoadedModel(spec, variables)


def prepare_input(model: LoadedModel, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """[H, W, 3] uint8 -> (network input [H', W', C] float32, the image it shows, notes)."""
  spec = model.spec
  notes = []
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


@functools.partial(jax.jit, static_argnames=('input_kind', 'num_heads', 'with_saliency'))
def score_batch(variables, x, *, input_kind: str, num_heads: int, with_saliency: bool):
  """-> (p_fake [B], p_heads [K, B], saliency maps [1 + K, B, h, w] or None)."""
  out = models.predict(variables, x, input_kind=input_kind, num_heads=num_heads)
  gap = models.uses_gap(input_kind)
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
  return p_fake, p_heads, maps


def _saliency(final_features, decision_params, gap: bool):
  if gap:
    return saliency.cam(final_features, decision_params['dense']['kernel'])
  return saliency.grad_cam(final_features, decision_params, gap=False)


def _error_record(path, message: str) -> dict:
  return {'path': str(path), 'p_fake': None, 'p_heads': {}, 'verdict': 'error', 'error': message,
          'notes': []}


def attribute(model: LoadedModel, paths, cam_dir=None, cam_scale: str = 'minmax') -> list[dict]:
  """Scores every image file; a file that cannot be scored gets an error record, never an abort."""
  spec = model.spec
  records: list[dict | None] = []
  pending: dict[tuple, list] = {}  # input shape -> [(index, x, shown image, notes)]
  overlay_names = _overlay_names(paths) if cam_dir is not None else None
  for path in paths:
    try:
      rgb, notes = images_lib.read_rgb(path)
      x, shown, more = prepare_input(model, rgb)
    except images_lib.ImageReadError as e:
      message = str(e) if str(path) in str(e) else f'{path}: {e}'
      records.append(_error_record(path, message))
      continue
    pending.setdefault(x.shape, []).append((len(records), x, shown, notes + more))
    records.append(None)

  for items in pending.values():
    for start in range(0, len(items), BATCH_SIZE):
      chunk = items[start:start + BATCH_SIZE]
      p_fake, p_heads, maps = jax.device_get(score_batch(
          model.variables, np.stack([item[1] for item in chunk]), input_kind=spec.input_kind,
          num_heads=len(spec.head_names), with_saliency=cam_dir is not None))
      for row, (index, _, shown, notes) in enumerate(chunk):
        heads = {name: float(p_heads[k, row]) for k, name in enumerate(spec.head_names)}
        records[index] = {'path': str(paths[index]), 'p_fake': float(p_fake[row]),
                          'p_heads': heads,
                          'verdict': verdicts.verdict(float(p_fake[row]), heads, model.thresholds),
                          'error': None, 'notes': notes}
        if cam_dir is not None:
          _write_overlay(pathlib.Path(cam_dir) / overlay_names[index], shown, maps[:, row],
                         records[index], model, cam_scale)
  return records


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
  name_width = max([len('image')] + [len(pathlib.Path(r['path']).name) for r in records])
  header = f'{"image":<{name_width}}  {"p_fake":>7}' + ''.join(f'  {h[:10]:>10}' for h in head_names)
  lines = [header + '  verdict', '-' * (len(header) + 30)]
  for r in records:
    name = pathlib.Path(r['path']).name
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


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m gta_jax.attribute',
                                   description='Detect and attribute GAN-generated images.')
  parser.add_argument('--model', required=True, help='release .h5, model bundle, or run workdir')
  parser.add_argument('--dct-stats', help='DCT statistics folder (mean.npy, std_dev.npy)')
  parser.add_argument('--json', help='write one record per input file to this JSON file')
  parser.add_argument('--cam-dir', help='write CAM / Grad-CAM overlays here')
  parser.add_argument('--cam-scale', choices=saliency.CAM_SCALES, default='minmax',
                      help='minmax: stretch each map to [0, 1] (default); release: values as they '
                           'are, as the authors drew them')
  parser.add_argument('inputs', nargs='+', metavar='IMAGE_OR_DIR')
  args = parser.parse_args(argv)
  try:
    model = load_model(args.model, args.dct_stats)
  except (UsageError, FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  paths = images_lib.list_images(args.inputs)
  if not paths:
    print(f'error: no image files found in {" ".join(args.inputs)}', file=sys.stderr)
    return 2
  records = attribute(model, paths, args.cam_dir, args.cam_scale)
  print(format_table(records, model.spec.head_names))
  failed = sum(r['error'] is not None for r in records)
  print(f'\n{len(records) - failed} scored, {failed} failed')
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(records, indent=2) + '\n')
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
