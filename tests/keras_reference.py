"""An independent float64 numpy forward pass of the release's Keras models, from .h5 arrays.

Written from the Keras layer semantics (TF 'same' padding, inference BatchNorm, GAP / Flatten),
sharing no code with gta_jax, so it can check our import and Flax modules.
"""
import math

import h5py
import numpy as np


def read_layers(path) -> dict:
  out = {}
  with h5py.File(path, 'r') as h5:
    group = h5['model_weights']
    for name in group.attrs['layer_names']:
      name = name.decode() if isinstance(name, bytes) else name
      layer = group[name]
      weights = {}
      for weight_name in layer.attrs['weight_names']:
        weight_name = weight_name.decode() if isinstance(weight_name, bytes) else weight_name
        weights[weight_name.split('/')[-1].split(':')[0]] = np.asarray(layer[weight_name], np.float64)
      if weights:
        out[name] = weights
  return out


def conv_same(x, kernel, bias, stride):
  kh, kw = kernel.shape[:2]
  pads = []
  for size, k in ((x.shape[1], kh), (x.shape[2], kw)):
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + k - size, 0)
    pads.append((total // 2, total - total // 2))
  xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  windows = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))
  windows = windows[:, ::stride, ::stride]  # [B, oh, ow, C, kh, kw]
  return np.einsum('bhwcij,ijco->bhwo', windows, kernel, optimize=True) + bias


def batch_norm(x, w, eps=1e-3):
  return w['gamma'] * (x - w['moving_mean']) / np.sqrt(w['moving_variance'] + eps) + w['beta']


def relu(x):
  return np.maximum(x, 0)


def decision(features, w):
  flat = features.mean(axis=(1, 2)) if w['kernel'].shape[0] == features.shape[-1] else \
      features.reshape(features.shape[0], -1)
  return flat @ w['kernel'][:, 0] + w['bias'][0]


def sigmoid(z):
  return 1 / (1 + np.exp(-z))


def forward(layers, x, head_prefixes=('a',)):
  """x: [B, H, W, C] float64 preprocessed input -> (p_fake [B], {prefix: p [B]})."""
  d = lambda n: layers['d' + n]
  h = relu(conv_same(x, d('Conv_01')['kernel'], d('Conv_01')['bias'], 1))
  mid = None
  for i, stride in zip(range(2, 7), (2, 1, 2, 1, 2)):
    c = d(f'Conv_{i:02d}')
    h = relu(batch_norm(conv_same(h, c['kernel'], c['bias'], stride), d(f'BNorm_{i:02d}')))
    if i == 4:
      mid = h
  p_fake = sigmoid(decision(h, d('Decision')))
  heads = {}
  for prefix in head_prefixes:
    if prefix + 'Conv_01' not in layers:
      continue
    a = lambda n: layers[prefix + n]
    g = relu(batch_norm(conv_same(mid, a('Conv_01')['kernel'], a('Conv_01')['bias'], 1), a('BNorm_01')))
    g = relu(batch_norm(conv_same(g, a('Conv_02')['kernel'], a('Conv_02')['bias'], 2), a('BNorm_02')))
    heads[prefix] = sigmoid(decision(g, a('Decision')))
  return p_fake, heads


def pixel_input(rgb):
  return rgb.astype(np.float64)[None] / 127.5 - 1


def dct_input(path_or_rgb, mean, std):
  """The release's data_prep: PIL convert('L') -> scipy dct (ortho, rows then cols) -> log -> z."""
  from PIL import Image
  import scipy.fftpack
  image = Image.open(path_or_rgb) if isinstance(path_or_rgb, str) else Image.fromarray(path_or_rgb)
  grey = np.asarray(image.convert('L'), np.float64)
  spectrum = scipy.fftpack.dct(scipy.fftpack.dct(grey, type=2, norm='ortho', axis=0),
                               type=2, norm='ortho', axis=1)
  return ((np.log(np.abs(spectrum) + 1e-12) - mean) / std)[None, ..., None]


# --- writing small .h5 files in the release's layout -------------------------------------------

def layer_shapes(in_channels=3, gap=True, size=128, heads=('a',)):
  """{layer: {weight: shape}} of a release model (primary + heads with the given prefixes)."""
  flat = (size // 8) ** 2 * 32
  shapes = {'dConv_01': {'kernel': (3, 3, in_channels, 3), 'bias': (3,)}}
  widths = [3, 8, 16, 16, 32, 32]
  for i in range(2, 7):
    k = 4 if i % 2 == 0 else 3
    shapes[f'dConv_{i:02d}'] = {'kernel': (k, k, widths[i - 2], widths[i - 1]), 'bias': (widths[i - 1],)}
    shapes[f'dBNorm_{i:02d}'] = {n: (widths[i - 1],) for n in ('gamma', 'beta', 'moving_mean', 'moving_variance')}
  shapes['dDecision'] = {'kernel': (32 if gap else flat, 1), 'bias': (1,)}
  for p in heads:
    shapes[f'{p}Conv_01'] = {'kernel': (3, 3, 16, 32), 'bias': (32,)}
    shapes[f'{p}Conv_02'] = {'kernel': (4, 4, 32, 32), 'bias': (32,)}
    for i in (1, 2):
      shapes[f'{p}BNorm_{i:02d}'] = {n: (32,) for n in ('gamma', 'beta', 'moving_mean', 'moving_variance')}
    shapes[f'{p}Decision'] = {'kernel': (32 if gap else flat, 1), 'bias': (1,)}
  return shapes


def random_layers(rng, shapes):
  layers = {}
  for name, weights in shapes.items():
    layers[name] = {}
    for w, shape in weights.items():
      if w == 'moving_variance':
        value = rng.uniform(0.5, 2.0, shape)
      elif w == 'gamma':
        value = rng.uniform(0.5, 1.5, shape)
      elif w == 'kernel':
        value = rng.normal(0, 0.15, shape)
      else:
        value = rng.normal(0, 0.1, shape)
      layers[name][w] = value.astype(np.float32)
  return layers


def write_h5(path, layers, input_shape):
  """A Keras-2 style model file: model_weights/<layer>/<layer>/<weight>:0 plus model_config."""
  import json
  with h5py.File(path, 'w') as h5:
    group = h5.create_group('model_weights')
    names = list(layers)
    group.attrs['layer_names'] = [n.encode() for n in ['dInput'] + names]
    group.create_group('dInput').attrs['weight_names'] = []
    for name in names:
      layer = group.create_group(name)
      weight_names = [f'{name}/{w}:0' for w in layers[name]]
      layer.attrs['weight_names'] = [w.encode() for w in weight_names]
      for weight_name, value in zip(weight_names, layers[name].values()):
        layer.create_dataset(weight_name, data=value)
    config = {'class_name': 'Functional', 'config': {'layers': [
        {'class_name': 'InputLayer', 'config': {'batch_input_shape': [None, *input_shape]}}]}}
    h5.attrs['model_config'] = json.dumps(config).encode()
