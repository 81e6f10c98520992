"""Flax linen networks of Khoo, Lim & Phan (2022) and the two baselines.

Every module returns logits (losses are computed on logits). Layer widths, kernels, strides and
initialisers follow the authors' release (see README "Faithfulness"); parameter counts, BatchNorm
statistics included, equal the released Keras models (tests/test_models.py).

Images are NHWC float32: pixel models take x/127.5 - 1 ([B, H, W, 3]), DCT models the
normalised log-DCT spectrum ([B, H, W, 1]).
"""
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

# Keras RandomNormal(stddev=0.02) kernels and zero biases, as the release initialises every layer.
KERNEL_INIT = nn.initializers.normal(stddev=0.02)
# Keras BatchNormalization defaults (confirmed in the release's model_config).
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3


def conv(features: int, kernel: int, stride: int, name: str | None = None) -> nn.Conv:
  """TF-style 'same' convolution with bias (Flax SAME pads exactly as TF does)."""
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding='SAME',
                 kernel_init=KERNEL_INIT, bias_init=nn.initializers.zeros, name=name)


def batch_norm(name: str | None = None, momentum: float = BN_MOMENTUM) -> nn.BatchNorm:
  return nn.BatchNorm(momentum=momentum, epsilon=BN_EPSILON, name=name)


def dense(features: int, name: str | None = None) -> nn.Dense:
  return nn.Dense(features, kernel_init=KERNEL_INIT, bias_init=nn.initializers.zeros, name=name)


class DecisionLayer(nn.Module):
  """GAP -> Dense(1) (pixel; CAM-able, any input size) or Flatten -> Dense(1) (DCT)."""
  gap: bool

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    pooled = features.mean(axis=(1, 2)) if self.gap else features.reshape(features.shape[0], -1)
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

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> PrimaryOutputs:
    h = nn.relu(conv(3, 3, 1, name='conv_01')(x))
    mid = None
    for i, (features, kernel, stride) in enumerate(
        [(8, 4, 2), (16, 3, 1), (16, 4, 2), (32, 3, 1), (32, 4, 2)], start=2):
      h = conv(features, kernel, stride, name=f'conv_{i:02d}')(h)
      h = nn.relu(batch_norm(f'bn_{i:02d}', self.bn_momentum)(h, use_running_average=not train))
      if i == 4:
        mid = h
    logit = DecisionLayer(self.gap, name='decision')(h)
    return PrimaryOutputs(logit, mid, h)


class HeadOutputs(NamedTuple):
  logit: jax.Array           # [B] (one head) or [K, B] (stacked heads): source-of-interest logit
  final_features: jax.Array  # [B, H/8, W/8, 32] or [K, B, H/8, W/8, 32]


class SecondaryHead(nn.Module):
  """One-vs-rest head for one generator: a trainable copy of primary block 3 on conv-4 features."""
  gap: bool = True
  bn_momentum: float = BN_MOMENTUM

  @nn.compact
  def __call__(self, mid_features: jax.Array, train: bool = False) -> HeadOutputs:
    h = mid_features
    for i, (kernel, stride) in enumerate([(3, 1), (4, 2)], start=1):
      h = conv(32, kernel, stride, name=f'conv_{i:02d}')(h)
      h = nn.relu(batch_norm(f'bn_{i:02d}', self.bn_momentum)(h, use_running_average=not train))
    return HeadOutputs(DecisionLayer(self.gap, name='decision')(h), h)


class StackedHeads(nn.Module):
  """K secondary heads as one module: every parameter and batch statistic has a leading axis K.

  All heads read the same primary features (computed once per batch); outputs are stacked on axis 0.
  """
  num_heads: int
  gap: bool = True
  bn_momentum: float = BN_MOMENTUM

  @nn.compact
  def __call__(self, mid_features: jax.Array, train: bool = False) -> HeadOutputs:
    vmapped = nn.vmap(SecondaryHead, variable_axes={'params': 0, 'batch_stats': 0},
                      split_rngs={'params': True}, in_axes=(None, None), out_axes=0,
                      axis_size=self.num_heads)
    return vmapped(self.gap, self.bn_momentum, name='heads')(mid_features, train)


class GanDctConv(nn.Module):
  """Frank et al.'s simple CNN as the release's `gdaconv` baseline (3x3 convs, no BN)."""
  num_classes: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # no BatchNorm or dropout
    h = nn.relu(conv(3, 3, 1)(x))
    h = nn.relu(conv(8, 3, 1)(h))
    h = nn.avg_pool(h, (2, 2), (2, 2))
    h = nn.relu(conv(16, 3, 1)(h))
    h = nn.avg_pool(h, (2, 2), (2, 2))
    h = nn.relu(conv(32, 3, 1)(h))
    logits = dense(self.num_classes)(h.reshape(h.shape[0], -1))
    return logits[:, 0] if self.num_classes == 1 else logits


class GanfpPostpool(nn.Module):
  """Yu et al.'s classifier at 1/4 width, pooling from 32 px down to 4 (the release's `postpool`)."""
  num_classes: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    act = lambda t: nn.leaky_relu(t, 0.2)
    h = x
    for width_a, width_b in [(4, 8), (8, 16), (16, 32)]:
      h = act(conv(width_a, 3, 1)(h))
      h = act(conv(width_b, 3, 1)(h))
      h = nn.avg_pool(h, (2, 2), (2, 2))
    while h.shape[1] > 4:
      h = nn.avg_pool(h, (2, 2), (2, 2))
    h = act(conv(128, 3, 1)(h))
    h = act(dense(128)(h.reshape(h.shape[0], -1)))
    logits = dense(self.num_classes)(h)
    return logits[:, 0] if self.num_classes == 1 else logits


def count_parameters(variables) -> int:
  """Number of scalars in a variable tree (params and BatchNorm statistics, as Keras counts)."""
  return sum(int(leaf.size) for leaf in jax.tree.leaves(variables))


def init_variables(module: nn.Module, rng: jax.Array, input_shape) -> dict:
  """Initialise `module` on a zero batch of `input_shape` ([B, H, W, C] or mid-feature shape)."""
  return module.init(rng, jnp.zeros(input_shape, jnp.float32), train=False)


class Predictions(NamedTuple):
  primary: PrimaryOutputs
  heads: HeadOutputs | None  # None for a primary-only model


def predict(variables: dict, x: jax.Array, *, gap: bool, num_heads: int) -> Predictions:
  """Inference through the primary and (if any) its K stacked heads; BatchNorm in inference mode.

  variables: {'primary': {...}, 'heads': {...}} as in a model bundle. x: [B, H, W, C] float32.
  """
  primary = Primary(gap).apply(variables['primary'], x, train=False)
  heads = None
  if num_heads:
    heads = StackedHeads(num_heads, gap).apply(
        variables['heads'], jax.lax.stop_gradient(primary.mid_features), train=False)
  return Predictions(primary, heads)
