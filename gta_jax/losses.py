"""Losses on logits (numerically stable, unlike Keras's clipped probabilities), masked so that the
padding of a final partial evaluation batch counts for nothing. Training and validation use the
same functions, inside jitted steps.
"""
import jax
import jax.numpy as jnp
import optax


def sigmoid_bce(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean binary cross-entropy over the batch (last) axis.

  logits, targets: [..., B] float32 (targets 0/1); mask: [B] or broadcastable, bool/float.
  -> [...]: one loss per output (a scalar for one output, [K] for K stacked heads).
  """
  losses = optax.sigmoid_binary_cross_entropy(logits, targets)
  return (losses * mask).sum(-1) / jnp.maximum(mask.sum(), 1)


def sigmoid_bce_weighting_real(logits: jax.Array, targets: jax.Array, mask: jax.Array,
                               real_weight: float) -> jax.Array:
  """sigmoid_bce with each real (target 0) example weighing `real_weight`: the weighted mean. With
  real_weight = fakes per real image, both classes weigh the same, so an image that carries no
  evidence either way scores 0.5 rather than the training prior of fakes (0.8 at 1 real : 4
  fake, which called smooth unseen photos fake)."""
  return sigmoid_bce(logits, targets, mask * jnp.where(targets == 0, real_weight, 1.0))


def softmax_ce(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy: logits [B, C], labels [B] int class index, mask [B] -> scalar."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return (losses * mask).sum() / jnp.maximum(mask.sum(), 1)
