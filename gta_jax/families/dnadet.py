"""The DNA-Det baseline (Yang et al., AAAI 2022): one multiclass network over (real, sources...)
trained from scratch on random crops with softmax cross-entropy plus the supervised contrastive
loss of its projected features, the two weighted by learned weights. Measured in the same
harness and protocol as the heads (crosstest, openset); config.recipe sets the crops and the
contrastive loss, config.model.dnadet_width the network's width (64 in the release).

Differences from the release, on purpose: one softmax (the release feeds softmax outputs to
PyTorch's CrossEntropyLoss, a second softmax); model selection on validation loss as every
family here (the release: validation accuracy); one Adam learning rate for the network and the
loss weights (the release: 0.01 for the weights); crops at even offsets.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gta_jax import errors
from gta_jax.families import base
from gta_jax.families import losses
from gta_jax.families import proposed
from gta_jax.models import networks
from gta_jax.scoring import metrics


def dnadet_train_step(state: base.TrainState, constants, batch, targets, active, *, model,
                      input_kind: str, optimizer, recipe: proposed.StepRecipe):
  """One step: crops (views) of each image, CE per crop, and the contrastive loss over views."""
  del active
  patches, patch_size, contrastive, temperature, contrastive_weight = recipe
  x = base.preprocess(batch['image'], input_kind, constants)
  key = jax.random.fold_in(jax.random.wrap_key_data(constants['step_key']), state.step)
  crop_key, dropout_key = jax.random.split(key)
  mask = batch['mask']
  if patches:
    x = proposed.random_patches(x, crop_key, patches, patch_size)
    targets, mask = jnp.repeat(targets, patches), jnp.repeat(mask, patches)

  def loss_of(params):
    (logits, embedding), updates = model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, x, train=True,
        mutable=['batch_stats'], rngs={'dropout': dropout_key})
    cross_entropy = losses.softmax_ce(logits, targets, mask)
    total = cross_entropy
    if contrastive:
      supcon = losses.supervised_contrastive(embedding, targets, mask, temperature)
      total = (losses.automatically_weighted(jnp.stack([cross_entropy, supcon]),
                                             params['loss_weights'])
               if contrastive_weight is None else cross_entropy + contrastive_weight * supcon)
    return total, (cross_entropy, logits, updates)

  (_, (cross_entropy, logits, updates)), grads = jax.value_and_grad(
      loss_of, has_aux=True)(state.params)
  accuracy = base.masked_mean(logits.argmax(-1) == targets, mask)
  return base.apply_gradients(state, grads, updates['batch_stats'], optimizer), {
      'loss': cross_entropy[None], 'accuracy': accuracy[None],
      'grad_norm': optax.tree.norm(grads)}


def dnadet_loss_step(variables, constants, batch, targets, *, model, input_kind: str):
  """-> [1] validation cross-entropy on whole images, BatchNorm in inference mode."""
  logits, _ = model.apply(variables, base.preprocess(batch['image'], input_kind, constants))
  return losses.softmax_ce(logits, targets, batch['mask'])[None]


def dnadet_predict_step(variables, constants, images, *, model, input_kind: str):
  """-> (1 - p_real [B], p_sources [K, B]), the multiclass baselines' outputs."""
  logits, _ = model.apply(variables, base.preprocess(images, input_kind, constants))
  probs = jax.nn.softmax(logits, axis=-1)
  return 1 - probs[:, 0], probs[:, 1:].T


def dnadet_batch_stats_step(variables, constants, batch, *, model, input_kind: str):
  """-> this batch's BatchNorm statistics (`model` has momentum 0; whole images)."""
  x = base.preprocess(batch['image'], input_kind, constants)
  _, updates = model.apply(variables, x, train=True, mutable=['batch_stats'],
                           rngs={'dropout': jax.random.key(0)})
  return updates['batch_stats']


class DnaDet(base.Family):
  name = arch = 'dnadet'
  tasks = ('multiclass',)
  stacked_outputs = False

  def __init__(self, config, dataset, workdir=None):
    super().__init__(config, dataset, workdir)
    if not self.sources:
      raise errors.ConfigError('the DNA-Det baseline classifies real + config.sources; name the '
                               "sources, e.g. --config.sources=\"('tconv', 'nearest')\".")
    if self.input_kind != 'pixel':
      raise errors.ConfigError('config.model.input: the DNA-Det baseline takes pixel input.')
    self.recipe = config.recipe
    proposed.check_patch_size(self.recipe, dataset.image_size)
    self.model = networks.DnaDetNet(1 + len(self.sources), config.model.dnadet_width,
                                  config.recipe.projection_features, config.model.bn_momentum,
                                  config.model.conv_impl)

  @property
  def num_outputs(self) -> int:
    return 1

  def outputs(self) -> metrics.Outputs:
    return metrics.Outputs(detection=True, head_names=self.sources, head_ids=self.source_ids,
                           multiclass='argmax')

  def constants(self) -> dict:
    return super().constants() | {'step_key': jax.random.key_data(
        jax.random.fold_in(jax.random.key(self.config.seed), 1))}

  def init_variables(self, key):
    size = self.dataset.image_size
    variables = networks.init_variables(self.model, key, (1, size, size, 3))
    params = dict(variables['params'])
    if self.recipe.contrastive and self.recipe.contrastive_weighting == 'learned':
      params['loss_weights'] = jnp.ones((2,))
    return {'params': params, 'batch_stats': variables['batch_stats']}

  def _bind(self, step, **kwargs):
    return functools.partial(step, model=self.model, input_kind=self.input_kind, **kwargs)

  def make_train_step(self, optimizer):
    return jax.jit(self._bind(dnadet_train_step, optimizer=optimizer,
                              recipe=proposed.step_recipe(self.recipe)), donate_argnums=0)

  def make_loss_step(self):
    return jax.jit(self._bind(dnadet_loss_step))

  def make_predict_step(self):
    return jax.jit(self._bind(dnadet_predict_step))

  def make_batch_stats_step(self):
    return jax.jit(functools.partial(dnadet_batch_stats_step,
                                     model=self.model.clone(bn_momentum=0.0),
                                     input_kind=self.input_kind))

  def targets(self, batch):
    classes = np.asarray((0,) + self.source_ids)
    return np.argmax(batch['source_id'][:, None] == classes[None, :], axis=1).astype(np.int32)

  def variables_from_bundle(self, spec, variables, source):
    return variables['primary']

  def bundle_variables(self, trained):
    params = {k: v for k, v in trained['params'].items() if k != 'loss_weights'}
    return {'primary': {'params': params, 'batch_stats': trained['batch_stats']}}
