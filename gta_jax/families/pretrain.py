"""DNA-Det's pre-training of the heads' convolutions on classifying image transformations
(config.recipe.pretrain_steps).

DNA-Det (Yang et al., AAAI 2022) pre-trains its network to tell which processing an image went
through (JPEG qualities, blurs, resizes, noise levels) before attribution: low-level traces of
processing are what an architecture leaves too, and a network that has learnt to see them leans
less on a generator's content or seed. Here every head's two convs (and their BatchNorm) learn to
classify TRANSFORMS of the real training images, on the frozen primary's mid features (plus the
recipe's frequency inputs), each head with a temporary linear classifier on its pooled features;
phase III then starts from those convs with a fresh decision layer. The transformed images are
drawn from (seed, step) alone, so the pre-training is deterministic and a resumed run that
starts over gets the same weights.
"""
import functools

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gta_jax.data import augment
from gta_jax.families import base
from gta_jax.io.writers import log
from gta_jax.models import networks


def _resized(image: np.ndarray, scale: float) -> np.ndarray:
  """Down-scaled by `scale` (area) and back up (bilinear): the resize trace without a size change."""
  height, width = image.shape[:2]
  small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                     interpolation=cv2.INTER_AREA)
  return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


# The classes: name -> (image, rng) -> transformed image (uint8 [H, W, 3]).
TRANSFORMS = {
    'none': lambda image, rng: image,
    'jpeg_q90': lambda image, rng: augment.jpeg(image, 90),
    'jpeg_q70': lambda image, rng: augment.jpeg(image, 70),
    'jpeg_q50': lambda image, rng: augment.jpeg(image, 50),
    'blur_k3': lambda image, rng: augment.blur(image, 3),
    'blur_k5': lambda image, rng: augment.blur(image, 5),
    'resize_0.5': lambda image, rng: _resized(image, 0.5),
    'resize_0.75': lambda image, rng: _resized(image, 0.75),
    'noise_std3': lambda image, rng: augment.noise(image, 3.0, rng),
    'noise_std8': lambda image, rng: augment.noise(image, 8.0, rng),
}


def transformation_batch(images: np.ndarray, seed: int, step: int):
  """Real images [N, H, W, 3] -> (a batch of them, each transformed by a class drawn from
  (seed, step), [B, H, W, 3] uint8; the classes [B] int32). B = N: the caller picks the images."""
  rng = np.random.default_rng([seed, step, 0x7f])
  classes = rng.integers(0, len(TRANSFORMS), len(images)).astype(np.int32)
  transforms = list(TRANSFORMS.values())
  out = np.stack([transforms[c](image, rng) for image, c in zip(images, classes)])
  return out, classes


def pretrain_step(params, batch_stats, opt_state, constants, images, classes, *, primary_model,
                  heads_model, input_kind: str, frequency_inputs, optimizer):
  """One Adam step of every head's convs and its temporary classifier (params['classifier']:
  kernel [K, 32, C], bias [K, C]) on transformation classes; -> (params, batch_stats, opt_state,
  mean cross-entropy per head [K], accuracy per head [K])."""
  x = base.preprocess(images, input_kind, constants)
  primary = primary_model.apply(constants['primary'], x, train=False)
  inputs = networks.head_inputs(primary.mid_features, x, frequency_inputs)

  def loss_of(trainable):
    heads_params = {k: v for k, v in trainable.items() if k != 'classifier'}
    out, updates = heads_model.apply({'params': heads_params, 'batch_stats': batch_stats}, inputs,
                                     train=True, mutable=['batch_stats'])
    pooled = out.final_features.mean(axis=(2, 3))  # [K, B, 32]
    logits = (jnp.einsum('kbc,kcn->kbn', pooled, trainable['classifier']['kernel'])
              + trainable['classifier']['bias'][:, None])
    per_head = optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.broadcast_to(classes, logits.shape[:2])).mean(axis=1)
    return per_head.sum(), (per_head, logits, updates['batch_stats'])

  (_, (per_head, logits, new_stats)), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  accuracy = (logits.argmax(-1) == classes[None]).mean(axis=1)
  return optax.apply_updates(params, updates), new_stats, opt_state, per_head, accuracy


def real_training_images(dataset, limit: int = 4096) -> np.ndarray:
  """Up to `limit` real (label 0) training images, uint8 [N, H, W, 3], in split order."""
  source = dataset.source('train')
  images = []
  for index in range(len(source)):
    record = source[index]
    if int(record['label']) == 0:
      images.append(np.asarray(record['image']))
      if len(images) >= limit:
        break
  if not images:
    raise ValueError('the training split holds no real image to pre-train on')
  return np.stack(images)


def pretrained_heads(variables: dict, key: jax.Array, *, images: np.ndarray, steps: int,
                     batch_size: int, learning_rate: float, seed: int, constants: dict,
                     primary_model, heads_model, input_kind: str, frequency_inputs=()) -> dict:
  """Fresh heads `variables` -> (the same with their convs and BatchNorm pre-trained for `steps`
  on transformation classes of `images` (real training images), the decision layers fresh;
  history: [{'step', 'loss', 'accuracy'}], means over the heads and the steps since the last
  entry, one entry every steps / 5 steps).

  Each step's classes and transformations are new draws, so a step's accuracy is measured on
  transformations it has not trained on (of images it may have seen)."""
  num_heads = heads_model.num_heads
  classifier = {'kernel': networks.KERNEL_INIT(key, (num_heads, 32, len(TRANSFORMS))),
                'bias': jnp.zeros((num_heads, len(TRANSFORMS)))}
  params = {**variables['params'], 'classifier': classifier}
  optimizer = optax.adam(learning_rate)
  opt_state = optimizer.init(params)
  batch_stats = variables['batch_stats']
  step_fn = jax.jit(functools.partial(
      pretrain_step, primary_model=primary_model, heads_model=heads_model, input_kind=input_kind,
      frequency_inputs=tuple(frequency_inputs), optimizer=optimizer))
  order = np.random.default_rng([seed, 0x7e]).permutation(len(images))
  batch_size = min(batch_size, len(images))
  log_every, history, window = max(1, steps // 5), [], []
  for step in range(steps):
    start = (step * batch_size) % (len(order) - batch_size + 1)
    chosen = images[order[start:start + batch_size]]
    batch, classes = transformation_batch(chosen, seed, step)
    params, batch_stats, opt_state, loss, accuracy = step_fn(
        params, batch_stats, opt_state, constants, jnp.asarray(batch), jnp.asarray(classes))
    window.append((loss.mean(), accuracy.mean()))
    if (step + 1) % log_every == 0 or step + 1 == steps:
      window_loss, window_accuracy = np.mean(jax.device_get(window), axis=0)
      history.append({'step': step + 1, 'loss': float(window_loss),
                      'accuracy': float(window_accuracy)})
      window = []
      log(f'pre-training on {len(TRANSFORMS)} image transformations: step {step + 1}/{steps} '
          f'loss {history[-1]["loss"]:.3f} accuracy {history[-1]["accuracy"]:.3f} (mean of heads and steps)')
  fresh = variables['params']['heads']  # StackedHeads keeps everything under 'heads'
  pretrained = {**params['heads'], 'decision': fresh['decision']}
  return {'params': {**variables['params'], 'heads': pretrained},
          'batch_stats': batch_stats}, history
