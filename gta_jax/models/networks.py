"""Flax linen networks of Khoo, Lim & Phan (2022) and the two baselines.

Every module returns logits (losses are computed on logits). Layer widths, kernels, strides and
initialisers follow the authors' release (see docs/fidelity.md); parameter counts, BatchNorm
statistics included, equal the released Keras models (tests/test_models.py).

Images are NHWC float32: pixel models take x/127.5 - 1 ([B, H, W, 3]), DCT models the
normalised log-DCT spectrum ([B, H, W, 1]).
"""
import contextlib
import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gta_jax.models import convolution
from gta_jax.models import frequency

# Keras RandomNormal(stddev=0.02) kernels and zero biases, as the release initialises every layer.
KERNEL_INIT = nn.initializers.normal(stddev=0.02)
# Keras BatchNormalization defaults (confirmed in the release's model_config).
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3


class Conv(nn.Module):
  """TF-'SAME' convolution with bias; variables named, shaped and initialised as nn.Conv's.

  impl: how the convolution is lowered (gta_jax/models/convolution.py): 'auto' (the CPU-tuned
  custom-gradient form on the CPU backend, lax.conv elsewhere), 'cpu' or 'lax'. Same function,
  same variables; only the speed differs.
  """
  features: int
  kernel_size: int
  stride: int = 1
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, affine: tuple | None = None, relu: bool = False,
               fused: bool = False) -> jax.Array:
    """affine (a, c) per output channel and relu: relu(a * conv(x) + c) in one fused op (an
    inference BatchNorm folded into the kernel and bias); fused: the bias added inside the
    convolution op (convolution.conv_bias_relu). See `fusion`."""
    kernel = self.param('kernel', KERNEL_INIT,
                        (self.kernel_size, self.kernel_size, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    if affine is None and not relu and not fused:
      return convolution.conv_same(x, kernel, self.stride, self.impl) + bias
    if affine is not None:
      a, c = affine
      kernel, bias = kernel * a, bias * a + c
    return convolution.conv_bias_relu(x, kernel, bias, self.stride, self.impl, relu)


_FUSION = {'on': True}


@contextlib.contextmanager
def layer_fusion(enabled: bool):
  """Traces inside run the onednn form's layers fused (the default) or not (three ops per layer,
  as on the other forms): for comparing the two (benchmarks/train_step.py, tests)."""
  previous, _FUSION['on'] = _FUSION['on'], enabled
  try:
    yield
  finally:
    _FUSION['on'] = previous


def fusion(module: nn.Module, conv_impl: str, train: bool) -> str | None:
  """How a conv -> BatchNorm -> ReLU layer runs: None, as written (three ops; XLA fuses the
  elementwise part itself); on the onednn form (not at init, where the plain path makes the
  variables) 'inference': the BatchNorm folded into the convolution, bias and ReLU as its
  post-ops, one oneDNN primitive per layer; 'training': the convolution with its bias, then
  BatchNorm-ReLU, one oneDNN primitive each (and each one backward), instead of XLA passes over
  the activations. The same function up to float32 rounding (tests/models/test_convolution.py)."""
  if (not _FUSION['on'] or module.is_initializing()
      or convolution.resolve_impl(conv_impl) != 'onednn'):
    return None
  return 'training' if train else 'inference'


def conv_bn_relu(conv: 'Conv', bn: nn.BatchNorm, h: jax.Array, train: bool,
                 mode: str | None) -> jax.Array:
  """relu(bn(conv(h))) in the `fusion` mode; training updates bn's running statistics as
  Flax's BatchNorm does. oneDNN's BatchNorm here is float32 only: other dtypes run unfused."""
  if mode == 'training' and h.dtype != jnp.float32:
    mode = None
  if mode == 'inference':
    return conv(h, inference_affine(bn), relu=True)
  if mode != 'training':
    return nn.relu(bn(conv(h), use_running_average=not train))
  h = conv(h, fused=True)
  params = bn.variables['params']
  y, mean, var = convolution.batch_norm_relu_train(h, params['scale'], params['bias'],
                                                   bn.epsilon)
  stats = bn.variables['batch_stats']
  bn.put_variable('batch_stats', 'mean',
                  bn.momentum * stats['mean'] + (1 - bn.momentum) * jax.lax.stop_gradient(mean))
  bn.put_variable('batch_stats', 'var',
                  bn.momentum * stats['var'] + (1 - bn.momentum) * jax.lax.stop_gradient(var))
  return y


def inference_affine(bn: nn.BatchNorm) -> tuple[jax.Array, jax.Array]:
  """An inference BatchNorm as (a, c) per channel, bn(x) = a * x + c: a = scale / sqrt(var +
  eps), as Flax computes it, c = bias - mean * a."""
  variables = bn.variables
  a = jax.lax.rsqrt(variables['batch_stats']['var'] + bn.epsilon) * variables['params']['scale']
  return a, variables['params']['bias'] - variables['batch_stats']['mean'] * a


def uses_gap(input_kind: str) -> bool:
  """The decision layer an input kind gets: pixel models pool globally (GAP, CAM-able, any input
  size); DCT models flatten (a fixed input size), as the release."""
  if input_kind not in ('pixel', 'dct'):
    raise ValueError(f'input kind {input_kind!r}: choose pixel or dct.')
  return input_kind == 'pixel'


def batch_norm(name: str | None = None, momentum: float = BN_MOMENTUM) -> nn.BatchNorm:
  return nn.BatchNorm(momentum=momentum, epsilon=BN_EPSILON, name=name, use_fast_variance=False)


def dense(features: int, name: str | None = None) -> nn.Dense:
  return nn.Dense(features, kernel_init=KERNEL_INIT, bias_init=nn.initializers.zeros, name=name)


def valid_mask(features: jax.Array, valid_size: jax.Array | None) -> jax.Array:
  """Zeroes every position outside each image's valid [rows, cols] (padding of a mixed-size batch).

  Images padded at the bottom/right with zeros and masked after every layer give, at their valid
  positions, exactly the features of the unpadded image: TF-SAME padding puts one row/column
  before the image whatever its size, and the masked zeros stand where SAME's zeros would.
  """
  if valid_size is None:
    return features
  rows = jnp.arange(features.shape[1])[None, :, None] < valid_size[:, 0, None, None]
  cols = jnp.arange(features.shape[2])[None, None, :] < valid_size[:, 1, None, None]
  return features * (rows & cols)[..., None].astype(features.dtype)


def strided_size(valid_size: jax.Array | None, stride: int) -> jax.Array | None:
  """Valid size after a TF-SAME convolution of this stride: ceil(n / stride)."""
  return None if valid_size is None else (valid_size + stride - 1) // stride


def global_average(features: jax.Array, valid_size: jax.Array | None) -> jax.Array:
  """[B, h, w, C] -> [B, C] mean over the valid positions (all of them without valid_size)."""
  if valid_size is None:
    return features.mean(axis=(1, 2))
  count = (valid_size[:, 0] * valid_size[:, 1]).astype(features.dtype)
  return valid_mask(features, valid_size).sum(axis=(1, 2)) / count[:, None]


class DecisionLayer(nn.Module):
  """GAP -> Dense(1) (pixel; CAM-able, any input size) or Flatten -> Dense(1) (DCT)."""
  gap: bool

  @nn.compact
  def __call__(self, features: jax.Array, valid_size: jax.Array | None = None) -> jax.Array:
    if self.gap:
      pooled = global_average(features, valid_size)
    else:
      if valid_size is not None:
        raise ValueError('A Flatten decision layer takes one fixed size; it cannot mask padding.')
      pooled = features.reshape(features.shape[0], -1)
    return dense(1, name='dense')(pooled)[:, 0]


class PrimaryOutputs(NamedTuple):
  logit: jax.Array           # [B] real(0)-vs-fake(1) logit
  mid_features: jax.Array    # [B, H/4, W/4, 16]: output of conv 4, where secondary heads branch
  final_features: jax.Array  # [B, H/8, W/8, 32]: post-ReLU maps under the decision layer (CAM)


class Primary(nn.Module):
  """The real-vs-fake detector: six convs (3x3/s1 and 4x4/s2 alternating), BN on all but the first."""
  gap: bool = True  # True: pixel variant (GAP head); False: DCT variant (Flatten head)
  # Moving-average momentum of the BatchNorm statistics (training only; Keras's 0.99 by default).
  bn_momentum: float = BN_MOMENTUM
  conv_impl: str = 'auto'  # see Conv

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False,
               valid_size: jax.Array | None = None) -> PrimaryOutputs:
    """valid_size: [B, 2] rows, cols of each image in a zero-padded mixed-size batch (inference)."""
    x = valid_mask(x, valid_size)
    mode = fusion(self, self.conv_impl, train)
    conv = Conv(3, 3, 1, self.conv_impl, name='conv_01')
    h = valid_mask(conv(x, relu=True) if mode else nn.relu(conv(x)), valid_size)
    mid = None
    for i, (features, kernel, stride) in enumerate(
        [(8, 4, 2), (16, 3, 1), (16, 4, 2), (32, 3, 1), (32, 4, 2)], start=2):
      h = conv_bn_relu(Conv(features, kernel, stride, self.conv_impl, name=f'conv_{i:02d}'),
                       batch_norm(f'bn_{i:02d}', self.bn_momentum), h, train, mode)
      valid_size = strided_size(valid_size, stride)
      h = valid_mask(h, valid_size)
      if i == 4:
        mid = h
    logit = DecisionLayer(self.gap, name='decision')(h, valid_size)
    return PrimaryOutputs(logit, mid, h)


class HeadOutputs(NamedTuple):
  logit: jax.Array           # [B] (one head) or [K, B] (stacked heads): source-of-interest logit
  final_features: jax.Array  # [B, H/8, W/8, 32] or [K, B, H/8, W/8, 32]


class SecondaryHead(nn.Module):
  """One-vs-rest head for one generator: a trainable copy of primary block 3 on conv-4 features."""
  gap: bool = True
  bn_momentum: float = BN_MOMENTUM
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, mid_features: jax.Array, train: bool = False,
               valid_size: jax.Array | None = None) -> HeadOutputs:
    """valid_size: [B, 2] valid rows, cols of the mid features (see Primary)."""
    h = mid_features
    mode = fusion(self, self.conv_impl, train)
    for i, (kernel, stride) in enumerate([(3, 1), (4, 2)], start=1):
      h = conv_bn_relu(Conv(32, kernel, stride, self.conv_impl, name=f'conv_{i:02d}'),
                       batch_norm(f'bn_{i:02d}', self.bn_momentum), h, train, mode)
      valid_size = strided_size(valid_size, stride)
      h = valid_mask(h, valid_size)
    return HeadOutputs(DecisionLayer(self.gap, name='decision')(h, valid_size), h)


class StackedHeads(nn.Module):
  """K secondary heads as one module: every parameter and batch statistic has a leading axis K.

  All heads read the same primary features (computed once per batch); outputs are stacked on
  axis 0. Three exact formulations share one variable layout (the tests check that they give the
  same outputs, statistics and gradients); docs/benchmarks.md has their speeds:
  - 'unrolled' (default): K ordinary convs inside the one jitted step, BatchNorm and the
    decision layers on the concatenated K*32 channels. Fastest on XLA CPU, where a conv over
    vmapped weights or a grouped conv compiles to something several times slower.
  - 'grouped': one conv with K*32 outputs, then one grouped conv (feature_group_count=K).
  - 'vmap': `nn.vmap` of SecondaryHead over the head axis (the literal definition).
  """
  num_heads: int
  gap: bool = True
  bn_momentum: float = BN_MOMENTUM
  formulation: str = 'unrolled'
  conv_impl: str = 'auto'  # lowering of each head's convs in the unrolled form (see Conv)

  @nn.compact
  def __call__(self, mid_features: jax.Array, train: bool = False,
               valid_size: jax.Array | None = None) -> HeadOutputs:
    """valid_size: [B, 2] valid rows, cols of the mid features (see Primary)."""
    if self.formulation == 'vmap':
      vmapped = nn.vmap(SecondaryHead, variable_axes={'params': 0, 'batch_stats': 0},
                        split_rngs={'params': True}, in_axes=(None, None, None), out_axes=0,
                        axis_size=self.num_heads)
      return vmapped(self.gap, self.bn_momentum, self.conv_impl, name='heads')(
          mid_features, train, valid_size)
    if self.formulation in ('unrolled', 'grouped'):
      return _ConcatenatedHeads(self.num_heads, self.gap, self.bn_momentum,
                                unroll=self.formulation == 'unrolled',
                                conv_impl=self.conv_impl, name='heads')(
          mid_features, train, valid_size)
    raise ValueError(f'unknown heads formulation {self.formulation!r}; '
                     'use unrolled, grouped or vmap.')


class _StackedConv(nn.Module):
  """K same-shaped convs on concatenated channels: kernel [K, kh, kw, I, 32], bias [K, 32].

  grouped=False: every head reads the same input; True: head k reads input channel block k.
  unroll=True runs K ordinary convs (fastest on XLA CPU); False one concatenated / grouped conv.
  """
  num_heads: int
  kernel_size: int
  stride: int
  grouped: bool
  unroll: bool = True
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x):
    k, size = self.num_heads, self.kernel_size
    in_features = x.shape[-1] // k if self.grouped else x.shape[-1]
    kernel = self.param('kernel', KERNEL_INIT, (k, size, size, in_features, 32))
    bias = self.param('bias', nn.initializers.zeros, (k, 32))
    if self.unroll:
      inputs = jnp.split(x, k, axis=-1) if self.grouped else [x] * k
      y = jnp.concatenate([convolution.conv_same(inputs[i], kernel[i], self.stride, self.conv_impl)
                           for i in range(k)], axis=-1)
    else:
      hwio = kernel.transpose(1, 2, 3, 0, 4).reshape(size, size, in_features, k * 32)
      y = jax.lax.conv_general_dilated(x, hwio, (self.stride,) * 2, 'SAME',
                                       dimension_numbers=convolution.DIMENSION_NUMBERS,
                                       feature_group_count=k if self.grouped else 1)
    return y + bias.reshape(-1)


class _StackedBatchNorm(nn.Module):
  """BatchNorm over K*32 channels with [K, 32] variables; the same arithmetic as nn.BatchNorm."""
  num_heads: int
  momentum: float

  @nn.compact
  def __call__(self, x, train: bool):
    shape = (self.num_heads, 32)
    scale = self.param('scale', nn.initializers.ones, shape).reshape(-1)
    bias = self.param('bias', nn.initializers.zeros, shape).reshape(-1)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, shape)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, shape)
    if train:
      mean = x.mean(axis=(0, 1, 2))
      var = jnp.square(x - mean).mean(axis=(0, 1, 2))
      if not self.is_initializing():
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1 - m) * mean.reshape(shape)
        ra_var.value = m * ra_var.value + (1 - m) * var.reshape(shape)
    else:
      mean, var = ra_mean.value.reshape(-1), ra_var.value.reshape(-1)
    return (x - mean) * (jax.lax.rsqrt(var + BN_EPSILON) * scale) + bias


class _StackedDecision(nn.Module):
  """K decision layers on [B, h, w, K*32] maps -> [K, B] logits (GAP or Flatten per head)."""
  num_heads: int
  gap: bool

  @nn.compact
  def __call__(self, features, valid_size=None):
    b, h, w, _ = features.shape
    in_features = 32 if self.gap else h * w * 32
    dense = _DenseParams(self.num_heads, in_features, name='dense')
    kernel, bias = dense()
    if self.gap:
      pooled = global_average(features, valid_size).reshape(b, self.num_heads, 32)
      logits = jnp.einsum('bkc,kc->kb', pooled, kernel[..., 0])
    else:  # Keras flattens in (h, w, c) order
      if valid_size is not None:
        raise ValueError('A Flatten decision layer takes one fixed size; it cannot mask padding.')
      per_head = features.reshape(b, h, w, self.num_heads, 32)
      logits = jnp.einsum('bhwkc,khwc->kb', per_head, kernel[..., 0].reshape(-1, h, w, 32))
    return logits + bias


class _DenseParams(nn.Module):
  num_heads: int
  in_features: int

  @nn.compact
  def __call__(self):
    kernel = self.param('kernel', KERNEL_INIT, (self.num_heads, self.in_features, 1))
    bias = self.param('bias', nn.initializers.zeros, (self.num_heads, 1))
    return kernel, bias


class _ConcatenatedHeads(nn.Module):
  """StackedHeads on concatenated channels; variables named and shaped as nn.vmap(SecondaryHead)'s."""
  num_heads: int
  gap: bool
  bn_momentum: float
  unroll: bool
  conv_impl: str

  @nn.compact
  def __call__(self, mid_features, train: bool, valid_size=None) -> HeadOutputs:
    k = self.num_heads
    h = _StackedConv(k, 3, 1, grouped=False, unroll=self.unroll, conv_impl=self.conv_impl,
                     name='conv_01')(mid_features)
    h = valid_mask(nn.relu(_StackedBatchNorm(k, self.bn_momentum, name='bn_01')(h, train)),
                   valid_size)
    h = _StackedConv(k, 4, 2, grouped=True, unroll=self.unroll, conv_impl=self.conv_impl,
                     name='conv_02')(h)
    valid_size = strided_size(valid_size, 2)
    h = valid_mask(nn.relu(_StackedBatchNorm(k, self.bn_momentum, name='bn_02')(h, train)),
                   valid_size)
    logits = _StackedDecision(k, self.gap, name='decision')(h, valid_size)
    b, hh, ww, _ = h.shape
    final = h.reshape(b, hh, ww, k, 32).transpose(3, 0, 1, 2, 4)  # [K, B, h, w, 32]
    return HeadOutputs(logits, final)


class GanDctConv(nn.Module):
  """Frank et al.'s simple CNN as the release's `gdaconv` baseline (3x3 convs, no BN)."""
  num_classes: int = 1
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # no BatchNorm or dropout
    conv = functools.partial(Conv, stride=1, impl=self.conv_impl)  # all 3x3 / stride 1
    h = nn.relu(conv(3, 3)(x))
    h = nn.relu(conv(8, 3)(h))
    h = nn.avg_pool(h, (2, 2), (2, 2))
    h = nn.relu(conv(16, 3)(h))
    h = nn.avg_pool(h, (2, 2), (2, 2))
    h = nn.relu(conv(32, 3)(h))
    logits = dense(self.num_classes)(h.reshape(h.shape[0], -1))
    return logits[:, 0] if self.num_classes == 1 else logits


class GanfpPostpool(nn.Module):
  """Yu et al.'s classifier at 1/4 width, pooling from 32 px down to 4 (the release's `postpool`)."""
  num_classes: int = 1
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    act = lambda t: nn.leaky_relu(t, 0.2)
    conv = functools.partial(Conv, stride=1, impl=self.conv_impl)  # all 3x3 / stride 1
    h = x
    for width_a, width_b in [(4, 8), (8, 16), (16, 32)]:
      h = act(conv(width_a, 3)(h))
      h = act(conv(width_b, 3)(h))
      h = nn.avg_pool(h, (2, 2), (2, 2))
    while h.shape[1] > 4:
      h = nn.avg_pool(h, (2, 2), (2, 2))
    h = act(conv(128, 3)(h))
    h = act(dense(128)(h.reshape(h.shape[0], -1)))
    logits = dense(self.num_classes)(h)
    return logits[:, 0] if self.num_classes == 1 else logits


class DnaDetNet(nn.Module):
  """DNA-Det's Simple_CNN (Yang et al., AAAI 2022) with its SupConNet projection: four blocks of a
  4x4/s2 and a 3x3/s1 convolution, each with BatchNorm and LeakyReLU(0.2), from `width` to
  8 x `width` channels; global average pooling; dropout 0.2 and a linear classifier over
  (real, sources...); and an MLP projection (8w -> 8w -> `projection_features`, L2-normalised)
  for the contrastive loss. The release applies a softmax to the logits and then PyTorch's
  CrossEntropyLoss (a second softmax); we return logits and take one softmax.
  -> (logits [B, classes], embedding [B, projection_features])."""
  num_classes: int
  width: int = 64
  projection_features: int = 128
  bn_momentum: float = 0.9  # PyTorch's BatchNorm2d default (momentum 0.1 in its convention)
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False):
    h = x
    for block, features in enumerate((self.width, 2 * self.width, 4 * self.width, 8 * self.width)):
      for layer, (kernel, stride) in enumerate(((4, 2), (3, 1))):
        h = Conv(features, kernel, stride, self.conv_impl, name=f'conv_{block}{layer}')(h)
        h = batch_norm(f'bn_{block}{layer}', self.bn_momentum)(h, use_running_average=not train)
        h = nn.leaky_relu(h, 0.2)
    pooled = h.mean(axis=(1, 2))
    logits = dense(self.num_classes, 'classifier')(
        nn.Dropout(0.2, deterministic=not train)(pooled))
    projected = dense(self.projection_features, 'projection_out')(
        nn.relu(dense(8 * self.width, 'projection_in')(pooled)))
    norm = jnp.maximum(jnp.linalg.norm(projected, axis=-1, keepdims=True), 1e-12)
    return logits, projected / norm


def count_parameters(variables) -> int:
  """Number of scalars in a variable tree (params and BatchNorm statistics, as Keras counts)."""
  return sum(int(leaf.size) for leaf in jax.tree.leaves(variables))


def init_variables(module: nn.Module, rng: jax.Array, input_shape) -> dict:
  """Initialise `module` on a zero batch of `input_shape` ([B, H, W, C] or mid-feature shape)."""
  return module.init(rng, jnp.zeros(input_shape, jnp.float32), train=False)


class Predictions(NamedTuple):
  primary: PrimaryOutputs
  heads: HeadOutputs | None  # None for a primary-only model


def head_inputs(mid_features: jax.Array, x: jax.Array, frequency_inputs=(),
                valid_size: jax.Array | None = None) -> jax.Array:
  """What the secondary heads read: the frozen primary's mid features (no gradient), then the
  auxiliary frequency maps of the scaled pixels x (gta_jax/models/frequency.py) when a recipe adds them."""
  mid_features = jax.lax.stop_gradient(mid_features)
  if not frequency_inputs:
    return mid_features
  return jnp.concatenate(
      [mid_features, frequency.frequency_features(x, frequency_inputs, valid_size)], axis=-1)


def predict(variables: dict, x: jax.Array, *, input_kind: str, num_heads: int,
            conv_impl: str = 'auto', valid_size: jax.Array | None = None,
            frequency_inputs: tuple[str, ...] = ()) -> Predictions:
  """Inference through the primary and (if any) its K stacked heads; BatchNorm in inference mode.

  variables: {'primary': {...}, 'heads': {...}} as in a model bundle. x: [B, H, W, C] float32,
  already preprocessed for `input_kind` ('pixel' or 'dct'). valid_size: [B, 2] rows, cols of
  each image when x is a zero-padded batch of mixed sizes (pixel models): the outputs are those
  of each image alone, and the feature maps are zero outside valid_size / 4 or / 8 (a global
  frequency input needs images of one size: frequency.needs_exact_size). frequency_inputs: the
  heads' auxiliary inputs (ModelSpec.head_frequency_inputs).
  """
  gap = uses_gap(input_kind)
  primary = Primary(gap, conv_impl=conv_impl).apply(variables['primary'], x, train=False,
                                                    valid_size=valid_size)
  heads = None
  if num_heads:
    heads = StackedHeads(num_heads, gap, conv_impl=conv_impl).apply(
        variables['heads'], head_inputs(primary.mid_features, x, frequency_inputs, valid_size),
        train=False, valid_size=strided_size(strided_size(valid_size, 2), 2))
  return Predictions(primary, heads)


def pooled_feature_width(num_heads: int) -> int:
  """pooled_features' width: the primary's 16 mid channels and each head's 32 final ones."""
  return 16 + 32 * num_heads


def pooled_features(predictions: Predictions, valid_size: jax.Array | None = None) -> jax.Array:
  """-> [B, 16 + 32K]: the primary's mid features and each head's final features, averaged over
  each image's valid positions. What the open-set feature scores compare (gta_jax/tools/openset.py);
  one definition, so `attribute` and `openset` measure the same thing on padded batches too."""
  mid = global_average(predictions.primary.mid_features, strided_size(valid_size, 4))
  if predictions.heads is None:
    return mid
  head_valid = strided_size(valid_size, 8)
  heads = jax.vmap(lambda f: global_average(f, head_valid))(predictions.heads.final_features)
  return jnp.concatenate([mid, jnp.transpose(heads, (1, 0, 2)).reshape(mid.shape[0], -1)], axis=1)

