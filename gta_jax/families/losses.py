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


def sigmoid_bce_class_weighted(logits: jax.Array, targets: jax.Array, mask: jax.Array, *,
                               negative_weight: float = 1.0,
                               positive_weight: float = 1.0) -> jax.Array:
  """sigmoid_bce with each negative (target 0) example weighing `negative_weight` and each
  positive `positive_weight`: the weighted mean per output. With the weights set to the class
  ratio, both classes weigh the same, so an input that carries no evidence either way scores 0.5
  rather than the training prior: the detector's real images (1 real : 4 fakes on the built-in
  data, whose prior 0.8 called smooth unseen photos fake) and a head's own source (1 : 4, whose
  prior 0.2 left heads with a high ROC-AUC claiming few of their own images).
  """
  weights = mask * jnp.where(targets == 1, positive_weight, negative_weight)
  losses = optax.sigmoid_binary_cross_entropy(logits, targets)
  total = weights.sum(-1)
  return (losses * weights).sum(-1) / jnp.where(total > 0, total, 1.0)


def sigmoid_bce_hardest_positives_dropped(logits: jax.Array, targets: jax.Array, mask: jax.Array,
                                          *, drop: float, negative_weight: float = 1.0,
                                          positive_weight: float = 1.0) -> jax.Array:
  """sigmoid_bce_class_weighted without the `drop` share of each output's positives (fakes; a
  head's own source) that have the highest loss in the batch (loss truncation). A perturbation
  can erase a fingerprint; such an image labelled positive teaches that a degraded or unfamiliar
  image is positive, which a detector then says of camera photos. Left out, an image without
  evidence is pushed toward negative by the negatives alone. Which positives are left out is not
  differentiated (a constant of each step). logits, targets: [..., B]; mask: broadcastable."""
  mask = jnp.broadcast_to(mask, targets.shape)
  positive = (targets == 1) & (mask > 0)
  fixed = jax.lax.stop_gradient(optax.sigmoid_binary_cross_entropy(logits, targets))
  ranked = -jnp.sort(jnp.where(positive, -fixed, jnp.inf), axis=-1)  # positives' losses, highest first
  dropped = jnp.floor(drop * positive.sum(-1, keepdims=True)).astype(jnp.int32)
  cutoff = jnp.take_along_axis(ranked, jnp.minimum(dropped, targets.shape[-1] - 1), axis=-1)
  kept = jnp.where(positive, fixed <= cutoff, True)
  return sigmoid_bce_class_weighted(logits, targets, mask * kept, negative_weight=negative_weight,
                                    positive_weight=positive_weight)


def softmax_ce(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy: logits [B, C], labels [B] int class index, mask [B] -> scalar."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return (losses * mask).sum() / jnp.maximum(mask.sum(), 1)


def supervised_contrastive(embeddings: jax.Array, labels: jax.Array, mask: jax.Array,
                           temperature: float = 0.07, base_temperature: float = 0.07) -> jax.Array:
  """Supervised contrastive loss (Khosla et al. 2020), as the public SupContrast code's SupConLoss
  with contrast_mode='all' (which DNA-Det reuses): every valid view is an anchor, its positives
  are the other valid views of its label, and it is contrasted with every other valid view
  (never itself). An anchor without a positive adds 0 and still counts in the mean, as there.

  embeddings: [N, D] L2-normalised; labels: [N] int; mask: [N] bool/float (padding: 0).
  -> scalar: the mean over valid anchors of -(T / T_base) * mean log-probability of a positive.
  """
  valid = mask.astype(jnp.float32)
  logits = embeddings @ embeddings.T / temperature
  logits = logits - jax.lax.stop_gradient(logits.max(axis=1, keepdims=True))
  others = (1.0 - jnp.eye(labels.shape[0])) * valid[None, :] * valid[:, None]
  positives = (labels[:, None] == labels[None, :]).astype(jnp.float32) * others
  log_prob = logits - jnp.log((jnp.exp(logits) * others).sum(axis=1, keepdims=True) + 1e-30)
  pairs = positives.sum(axis=1)
  mean_log_prob = (positives * log_prob).sum(axis=1) / jnp.where(pairs < 1e-6, 1.0, pairs)
  per_anchor = -(temperature / base_temperature) * mean_log_prob
  return (per_anchor * valid).sum() / jnp.maximum(valid.sum(), 1)


def automatically_weighted(task_losses: jax.Array, weights: jax.Array) -> jax.Array:
  """DNA-Det's AutomaticWeightedLoss (after Kendall et al. 2018): sum_i 0.5 / w_i^2 L_i +
  log(1 + w_i^2) over the last axis, the w_i trained with the model (initialised to 1), so
  that neither loss needs a hand-set weight. task_losses, weights: [..., T] -> [...]."""
  return (0.5 / jnp.square(weights) * task_losses + jnp.log1p(jnp.square(weights))).sum(-1)
