"""The two baselines, trained from scratch: gandct-conv (Frank et al.) and ganfp-postpool (Yu et
al.), for detection, one-vs-rest attribution of one source, or multiclass (real + sources)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gta_jax import errors
from gta_jax.families import base
from gta_jax.families import losses
from gta_jax.models import networks
from gta_jax.scoring import metrics


def baseline_train_step(state: base.TrainState, constants, batch, targets, active, *, model,
                        input_kind: str, loss_fn, optimizer):
  """One step from scratch. targets: [B] float 0/1 (sigmoid) or int class index (softmax)."""
  del active
  x = base.preprocess(batch['image'], input_kind, constants)

  def loss_of(params):
    logits = model.apply({'params': params}, x, train=True)
    predicted = logits >= 0 if logits.ndim == 1 else logits.argmax(-1)
    return loss_fn(logits, targets, batch['mask']), predicted

  (loss, predicted), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
  accuracy = base.masked_mean(predicted == targets, batch['mask'])
  return base.apply_gradients(state, grads, state.batch_stats, optimizer), {
      'loss': loss[None], 'accuracy': accuracy[None], 'grad_norm': optax.tree.norm(grads)}


def baseline_loss_step(variables, constants, batch, targets, *, model, input_kind: str, loss_fn):
  logits = model.apply({'params': variables['params']},
                       base.preprocess(batch['image'], input_kind, constants))
  return loss_fn(logits, targets, batch['mask'])[None]


def _logits(variables, constants, images, model, input_kind):
  return model.apply({'params': variables['params']}, base.preprocess(images, input_kind, constants))


def binary_predict_step(variables, constants, images, *, model, input_kind: str):
  """Detection: -> (p_fake [B], p_heads [0, B])."""
  probs = jax.nn.sigmoid(_logits(variables, constants, images, model, input_kind))
  return probs, jnp.zeros((0, probs.shape[0]))


def one_vs_rest_predict_step(variables, constants, images, *, model, input_kind: str):
  """One-vs-rest: no detection output -> (NaN [B], p_source [1, B])."""
  probs = jax.nn.sigmoid(_logits(variables, constants, images, model, input_kind))
  return jnp.full_like(probs, jnp.nan), probs[None]


def softmax_predict_step(variables, constants, images, *, model, input_kind: str):
  """Multiclass over (real, sources...): -> (1 - p_real [B], p_sources [K, B])."""
  probs = jax.nn.softmax(_logits(variables, constants, images, model, input_kind), axis=-1)
  return 1 - probs[:, 0], probs[:, 1:].T


class Baseline(base.SingleModelFamily):
  tasks = ('detection', 'attribution', 'multiclass')
  train_step_fn = staticmethod(baseline_train_step)
  loss_step_fn = staticmethod(baseline_loss_step)
  module_class = None
  any_input_size = True  # False: a dense layer on flattened maps fixes the input size

  def __init__(self, config, dataset, workdir=None):
    super().__init__(config, dataset, workdir)
    if self.task == 'attribution' and len(self.sources) != 1:
      raise errors.ConfigError('a one-vs-rest baseline needs exactly one source in config.sources, '
                       f'got {self.sources}.')
    if self.task == 'multiclass' and not self.sources:
      raise errors.ConfigError('a multiclass baseline needs its fake classes in config.sources.')
    if self.task == 'detection' and self.sources:
      raise errors.ConfigError(f'config.sources={self.sources} but config.task=detection; set '
                       'config.task=attribution or multiclass.')
    num_classes = 1 + len(self.sources) if self.task == 'multiclass' else 1
    self.model = self.module_class(num_classes, conv_impl=config.model.conv_impl)
    self.loss_fn = losses.softmax_ce if self.task == 'multiclass' else losses.sigmoid_bce
    self.predict_step_fn = {'detection': binary_predict_step, 'attribution': one_vs_rest_predict_step,
                         'multiclass': softmax_predict_step}[self.task]

  @property
  def num_outputs(self) -> int:
    return 1

  def outputs(self) -> metrics.Outputs:
    return metrics.Outputs(detection=self.task != 'attribution', head_names=self.sources,
                           head_ids=self.source_ids,
                           multiclass='argmax' if self.task == 'multiclass' else None,
                           any_input_size=self.any_input_size and self.input_kind == 'pixel')

  def init_variables(self, key):
    channels = 1 if self.input_kind == 'dct' else 3
    size = self.dataset.image_size
    params = networks.init_variables(self.model, key, (1, size, size, channels))['params']
    return {'params': params, 'batch_stats': {}}

  def targets(self, batch):
    if self.task == 'attribution':
      return (batch['source_id'] == self.source_ids[0]).astype(np.float32)
    if self.task == 'multiclass':
      classes = np.asarray((0,) + self.source_ids)
      return np.argmax(batch['source_id'][:, None] == classes[None, :], axis=1).astype(np.int32)
    return batch['label'].astype(np.float32)

  def variables_from_bundle(self, spec, variables, source):
    return {'params': variables['primary']['params'], 'batch_stats': {}}

  def bundle_variables(self, trained):
    return {'primary': {'params': trained['params']}}


class GanDctConv(Baseline):
  name = arch = 'gandct'
  module_class = networks.GanDctConv
  any_input_size = False


class GanfpPostpool(Baseline):
  name = arch = 'postpool'
  module_class = networks.GanfpPostpool
