"""Import the authors' released Keras .h5 models into our variables and model bundles (h5py only).

(The command-line tool is gta_jax/tools/keras_import.py.)

Release layer names map onto ours: dConv_0i -> primary conv_0i, dBNorm_0i -> bn_0i (gamma/beta ->
scale/bias params, moving mean/variance -> batch_stats), dDecision -> decision/dense. Secondary
layers `a*` (one head) or `a1*..aN*` (multilabel) are stacked on a leading head axis.
"""
import json
import pathlib
import re

import h5py
import jax
import numpy as np

from gta_jax import errors
from gta_jax.io import checkpoints

_LAYER = re.compile(r'^(d|a\d*)(Conv|BNorm|Decision)(?:_(\d+))?$')


class H5ImportError(errors.UserError, ValueError):
  """An .h5 file that is not a release model of this paper."""


# The largest array a release model holds is a DCT decision kernel ((256/8)^2 * 32 = 32,768
# values); anything declaring more than this is refused before it is read.
MAX_DATASET_VALUES = 1 << 22


def read_h5_layers(path) -> tuple[dict, dict]:
  """-> ({layer_name: {weight_name: array}}, model_config dict) from a Keras 2 .h5 model file.

  Only plain data stored inside the file is read: external storage, external or soft links and
  virtual datasets (which would pull other files, e.g. /etc/passwd, into the weights) and
  datasets declaring more values than a release model has are refused before any data is read.
  """
  try:
    h5 = h5py.File(path, 'r')
  except OSError as e:
    raise H5ImportError(f'{path}: not a readable HDF5 file ({e}).') from e
  with h5:
    try:
      group = _member(h5, 'model_weights', path, h5py.Group)
      if group is None:
        raise H5ImportError(f'{path}: no model_weights group; expected a Keras model saved with '
                            'model.save(..., save_format="h5").')
      layers = {}
      for layer_name in _decode_all(group.attrs.get('layer_names', [])):
        layer = _member(group, layer_name, path, h5py.Group)
        if layer is None:
          raise H5ImportError(f'{path}: layer {layer_name!r} is listed but not stored.')
        weights = {}
        for weight_name in _decode_all(layer.attrs.get('weight_names', [])):
          short = weight_name.split('/')[-1].split(':')[0]  # 'dConv_01/kernel:0' -> 'kernel'
          weights[short] = _read_weight(layer, weight_name, path)
        if weights:
          layers[layer_name] = weights
      config = {}
      if 'model_config' in h5.attrs:
        config = json.loads(_decode(h5.attrs['model_config']))
        if not isinstance(config, dict):
          raise ValueError('model_config is not a JSON object')
    except H5ImportError:
      raise
    except (KeyError, TypeError, ValueError, OSError, UnicodeDecodeError) as e:
      raise H5ImportError(f'{path}: malformed Keras .h5 structure ({type(e).__name__}: {e}).') \
          from None
  return layers, config


def _member(group, name: str, path, kind):
  """group[name] reached through hard links only, or None when absent; refuses links elsewhere."""
  node = group
  for part in [p for p in name.split('/') if p]:
    link = node.get(part, getlink=True)
    if link is None:
      return None
    if not isinstance(link, h5py.HardLink):
      raise H5ImportError(f'{path}: {name!r} is a {type(link).__name__}; a model file must store '
                          'its weights itself (links to other objects or files are refused).')
    node = node[part]
  if not isinstance(node, kind):
    raise H5ImportError(f'{path}: {name!r} is not a {kind.__name__.lower()}.')
  return node


def _read_weight(layer, weight_name: str, path) -> np.ndarray:
  dataset = _member(layer, weight_name, path, h5py.Dataset)
  if dataset is None:
    raise H5ImportError(f'{path}: weight {weight_name!r} is listed but not stored.')
  if dataset.is_virtual or dataset.external:
    raise H5ImportError(f'{path}: weight {weight_name!r} is stored outside the file '
                        '(external or virtual dataset); refused.')
  if dataset.dtype.kind != 'f':
    raise H5ImportError(f'{path}: weight {weight_name!r} is {dataset.dtype}, not floating point.')
  values = int(np.prod(dataset.shape, dtype=np.int64)) if dataset.shape is not None else 0
  if values > MAX_DATASET_VALUES:
    raise H5ImportError(f'{path}: weight {weight_name!r} declares shape {dataset.shape}, more '
                        'than any release model holds; refused before reading.')
  return np.asarray(dataset[()], np.float32)


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
  try:
    checkpoints.check_variables(spec, variables, path)
    checkpoints.check_finite(variables, str(path))
    checkpoints.check_batch_norm(variables, str(path))
  except errors.ConfigError as e:
    raise H5ImportError(str(e)) from None
  return spec, variables


def _input_shapes(config: dict, path):
  """The batch_input_shape of each layer of model_config that declares one; a structure that is
  not Keras's (a hand-edited or foreign file) is one clear error naming the file."""
  def malformed(what):
    return H5ImportError(f'{path}: malformed Keras .h5 structure (model_config: {what}).')

  model = config.get('config', {})
  if not isinstance(model, dict):
    raise malformed('"config" is not an object')
  layers = model.get('layers', [])
  if not isinstance(layers, list):
    raise malformed('"config.layers" is not a list')
  for index, layer in enumerate(layers):
    layer_config = layer.get('config', {}) if isinstance(layer, dict) else None
    if not isinstance(layer_config, dict):
      raise malformed(f'layer {index} is not a {{"class_name", "config"}} object')
    shape = layer_config.get('batch_input_shape')
    if shape is None:
      continue
    if not (isinstance(shape, list) and len(shape) == 4 and all(
        d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in shape)):
      raise malformed(f'layer {index}\'s batch_input_shape is {shape!r}, not [batch, height, '
                      'width, channels]')
    yield shape


def _image_size(config: dict, primary: dict, input_kind: str, path) -> int:
  for shape in _input_shapes(config, path):
    if shape[1]:
      return int(shape[1])
  if input_kind == 'dct':  # Flatten head: kernel rows = (size/8)^2 * 32
    return int(round(np.sqrt(primary['params']['decision']['dense']['kernel'].shape[0] / 32))) * 8
  raise H5ImportError(f'{path}: no input shape in model_config; cannot tell the training size.')


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
