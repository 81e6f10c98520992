"""Import the authors' released Keras .h5 models into our variables and model bundles (h5py only).

Usage: python -m gta_jax.keras_import IN.h5 OUT_DIR [--dct-stats DIR] [--head-names a,b]

Release layer names map onto ours: dConv_0i -> primary conv_0i, dBNorm_0i -> bn_0i (gamma/beta ->
scale/bias params, moving mean/variance -> batch_stats), dDecision -> decision/dense. Secondary
layers `a*` (one head) or `a1*..aN*` (multilabel) are stacked on a leading head axis.
"""
import argparse
import json
import pathlib
import re
import sys

import h5py
import jax
import numpy as np

from gta_jax import checkpoints
from gta_jax import errors
from gta_jax import models
from gta_jax import spectral

_LAYER = re.compile(r'^(d|a\d*)(Conv|BNorm|Decision)(?:_(\d+))?$')


class H5ImportError(errors.UserError, ValueError):
  """An .h5 file that is not a release model of this paper."""


def read_h5_layers(path) -> tuple[dict, dict]:
  """-> ({layer_name: {weight_name: array}}, model_config dict) from a Keras 2 .h5 model file."""
  try:
    h5 = h5py.File(path, 'r')
  except OSError as e:
    raise H5ImportError(f'{path}: not a readable HDF5 file ({e}).') from e
  with h5:
    if 'model_weights' not in h5:
      raise H5ImportError(f'{path}: no model_weights group; expected a Keras model saved with '
                         'model.save(..., save_format="h5").')
    group = h5['model_weights']
    layers = {}
    for layer_name in _decode_all(group.attrs.get('layer_names', [])):
      layer = group[layer_name]
      weights = {}
      for weight_name in _decode_all(layer.attrs.get('weight_names', [])):
        short = weight_name.split('/')[-1].split(':')[0]  # 'dConv_01/kernel:0' -> 'kernel'
        weights[short] = np.asarray(layer[weight_name], np.float32)
      if weights:
        layers[layer_name] = weights
    config = json.loads(_decode(h5.attrs['model_config'])) if 'model_config' in h5.attrs else {}
  return layers, config


def _decode(value):
  return value.decode() if isinstance(value, bytes) else str(value)


def _decode_all(values):
  return [_decode(v) for v in values]


def _convert_layer(kind: str, weights: dict, path, layer_name: str):
  """-> (params, batch_stats or None) for one release layer."""
  try:
    if kind == 'Conv':
      return {'kernel': weights['kernel'], 'bias': weights['bias']}, None
    if kind == 'BNorm':
      return ({'scale': weights['gamma'], 'bias': weights['beta']},
              {'mean': weights['moving_mean'], 'var': weights['moving_variance']})
    return {'dense': {'kernel': weights['kernel'], 'bias': weights['bias']}}, None
  except KeyError as e:
    raise H5ImportError(f'{path}: layer {layer_name} lacks weight {e}.') from None


def _module_name(kind: str, index: str | None) -> str:
  return 'decision' if kind == 'Decision' else f'{"conv" if kind == "Conv" else "bn"}_{index}'


def head_name_from_filename(path) -> str | None:
  """attribution_ganfp_progan_dct_aug.h5 -> 'progan'; primary_*.h5 -> None."""
  tokens = pathlib.Path(path).stem.split('_')
  if len(tokens) >= 3 and tokens[0] == 'attribution':
    return tokens[2]
  return None


def convert(layers: dict, config: dict, path, head_names=None):
  """Release layers -> (ModelSpec, {'primary': vars, 'heads': stacked vars}) checked against ours."""
  groups: dict[str, dict] = {}
  for layer_name, weights in layers.items():
    match = _LAYER.match(layer_name)
    if not match:
      raise H5ImportError(f'{path}: unexpected layer {layer_name!r}; this is not a model of the '
                         'release (expected dConv_*/dBNorm_*/dDecision and optional a*/a<i>* heads).')
    prefix, kind, index = match.groups()
    params, stats = _convert_layer(kind, weights, path, layer_name)
    group = groups.setdefault(prefix, {'params': {}, 'batch_stats': {}})
    group['params'][_module_name(kind, index)] = params
    if stats is not None:
      group['batch_stats'][_module_name(kind, index)] = stats
  if 'd' not in groups:
    raise H5ImportError(f'{path}: no primary (d*) layers found.')
  primary = groups.pop('d')

  in_channels = primary['params']['conv_01']['kernel'].shape[2]
  input_kind = 'dct' if in_channels == 1 else 'pixel'
  image_size = _image_size(config, primary, input_kind, path)
  head_prefixes = sorted(groups, key=lambda p: int(p[1:] or 0))
  if head_names is None:
    default = head_name_from_filename(path)
    head_names = [default or p for p in head_prefixes] if len(head_prefixes) == 1 else head_prefixes
  head_names = tuple(head_names)
  if len(head_names) != len(head_prefixes):
    raise H5ImportError(f'{path}: {len(head_prefixes)} heads in the file but {len(head_names)} '
                       f'names given ({",".join(head_names)}).')
  spec = checkpoints.ModelSpec(input_kind=input_kind, image_size=image_size,
                               head_names=head_names, source=str(path))
  variables = {'primary': primary}
  if head_prefixes:
    stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *[groups[p] for p in head_prefixes])
    variables['heads'] = {'params': {'heads': stacked['params']},
                          'batch_stats': {'heads': stacked['batch_stats']}}
  _check_against_modules(spec, variables, path)
  return spec, variables


def _image_size(config: dict, primary: dict, input_kind: str, path) -> int:
  for layer in config.get('config', {}).get('layers', []):
    shape = layer.get('config', {}).get('batch_input_shape')
    if shape and shape[1]:
      return int(shape[1])
  if input_kind == 'dct':  # Flatten head: kernel rows = (size/8)^2 * 32
    return int(round(np.sqrt(primary['params']['decision']['dense']['kernel'].shape[0] / 32))) * 8
  raise H5ImportError(f'{path}: no input shape in model_config; cannot tell the training size.')


def _check_against_modules(spec, variables, path) -> None:
  """Every imported array must have the shape our modules would create: catches layout mismatches."""
  size = spec.image_size
  channels = 1 if spec.input_kind == 'dct' else 3
  expected = {'primary': jax.eval_shape(lambda: models.init_variables(
      models.Primary(models.uses_gap(spec.input_kind)), jax.random.key(0), (1, size, size, channels)))}
  if spec.head_names:
    expected['heads'] = jax.eval_shape(lambda: models.init_variables(
        models.StackedHeads(len(spec.head_names), models.uses_gap(spec.input_kind)), jax.random.key(0),
        (1, size // 4, size // 4, 16)))
  got_shapes = jax.tree.map(np.shape, variables)
  want_shapes = jax.tree.map(lambda s: tuple(s.shape), expected)
  if got_shapes != want_shapes:
    flat_got = dict(jax.tree_util.tree_flatten_with_path(got_shapes, is_leaf=_is_shape)[0])
    flat_want = dict(jax.tree_util.tree_flatten_with_path(want_shapes, is_leaf=_is_shape)[0])
    diffs = [f'{jax.tree_util.keystr(k)}: file {flat_got.get(k)} vs model {flat_want.get(k)}'
             for k in sorted(set(flat_got) | set(flat_want), key=jax.tree_util.keystr)
             if flat_got.get(k) != flat_want.get(k)]
    raise H5ImportError(f'{path}: weights do not fit the paper\'s architecture: ' + '; '.join(diffs[:5]))


def _is_shape(x) -> bool:
  return isinstance(x, tuple) and all(isinstance(d, int) for d in x)


def import_h5(path, head_names=None):
  """Reads and converts a release .h5 -> (ModelSpec, variables)."""
  layers, config = read_h5_layers(path)
  return convert(layers, config, path, head_names)


def load_any(path):
  """A release .h5 (imported on the fly), a model bundle, or a run workdir holding one in model/
  -> (spec, variables, dct_stats or None); None when `path` is none of these."""
  path = pathlib.Path(path)
  if path.suffix.lower() == '.h5' and path.is_file():
    return (*import_h5(path), None)
  for bundle in (path, path / 'model'):
    if checkpoints.is_model_bundle(bundle):
      return checkpoints.load_model_bundle(bundle)
  return None


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m gta_jax.keras_import', description=__doc__.split('\n')[0])
  parser.add_argument('h5', help='release model, e.g. attribution_ganfp_progan.h5')
  parser.add_argument('out_dir', help='model bundle folder to write')
  parser.add_argument('--dct-stats', help='folder with mean.npy and std_dev.npy (DCT models)')
  parser.add_argument('--head-names', help='comma-separated head names (default: from file name)')
  args = parser.parse_args(argv)
  head_names = args.head_names.split(',') if args.head_names else None
  try:
    spec, variables = import_h5(args.h5, head_names)
    dct_stats = None
    if spec.input_kind == 'dct':
      if not args.dct_stats:
        parser.error(f'{args.h5} is a DCT model: pass --dct-stats DIR (the release statistics, '
                     'e.g. dataset/statistics/ganfp/dctnorm).')
      dct_stats = spectral.load_dct_stats(args.dct_stats)
      if dct_stats[0].shape != (spec.image_size, spec.image_size):
        parser.error(f'--dct-stats {args.dct_stats} is {dct_stats[0].shape}, but the model takes '
                     f'{spec.image_size}x{spec.image_size} inputs.')
    spec = checkpoints.save_model_bundle(args.out_dir, spec, variables, dct_stats)
  except (H5ImportError, FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {args.out_dir}: {spec.input_kind} model, {spec.image_size} px, '
        f'heads {list(spec.head_names) or "none"}, '
        f'{models.count_parameters(variables):,} parameters')
  return 0


if __name__ == '__main__':
  sys.exit(main())
