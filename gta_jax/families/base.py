"""What every model family provides to the trainer, evaluators and exporters, and the pieces
their steps share.

A family is the model side of a run: its modules, frozen constants, pure jitted steps, label view
and export. The trainer's loop calls only the methods below and knows no family by name; a new
family is a new module in gta_jax/families/ plus one line in the registry (families/__init__.py).
"""
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gta_jax import errors
from gta_jax.io import checkpoints
from gta_jax.models.spectral import preprocess  # noqa: F401  (the families' name for it)
from gta_jax.scoring import metrics


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def new_state(variables: dict, optimizer) -> TrainState:
  """Step 0 of training `variables` ({'params', 'batch_stats'}) with a fresh optimizer state."""
  return TrainState(jnp.zeros((), jnp.int32), variables['params'], variables['batch_stats'],
                    optimizer.init(variables['params']))


def masked_mean(values, mask, axis=None):
  values = values.astype(jnp.float32) * mask
  return values.sum(axis=axis) / jnp.maximum(mask.sum(), 1)


def apply_gradients(state: TrainState, grads, batch_stats, optimizer) -> TrainState:
  changes, opt_state = optimizer.update(grads, state.opt_state, state.params)
  return TrainState(state.step + 1, optax.apply_updates(state.params, changes), batch_stats,
                    opt_state)


def select_outputs(active: jax.Array, new, old):
  """Per-output choice between two trees whose leaves carry a leading output axis (other leaves,
  e.g. Adam's step count: new)."""
  def pick(a, b):
    if a.ndim == 0 or a.shape[0] != active.shape[0]:
      return a
    return jnp.where(active.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
  return jax.tree.map(pick, new, old)


class Family:
  """Interface of a model family. Subclasses set the class attributes and implement the methods.

  Steps are module-level pure functions that receive their modules, loss and optimizer (bound
  with functools.partial), with one signature for every family:
    train_step(state, constants, batch, targets, active) -> (state, {'loss': [O], 'accuracy': [O],
      'grad_norm': the L2 norm of all gradients, a diagnostic})
    loss_step(variables, constants, batch, targets) -> [O] mean validation loss of the batch
    predict_step(variables, constants, images) -> (p_fake [B], p_heads [K, B])
  where O = num_outputs, `constants` is the frozen pytree of `constants()`, `targets` the host label
  view of `targets(batch)`, and `active` [O] bool says which outputs still train.
  """
  name: str = ''
  arch: str = 'proposed'      # recorded in the model bundle
  # The heads' auxiliary frequency maps (config.recipe.frequency_inputs), recorded in the bundle.
  head_frequency_inputs: tuple[str, ...] = ()
  # The config.recipe settings beyond the defaults this family implements (others are refused).
  recipe_extras: tuple[str, ...] = ()
  tasks: tuple[str, ...] = ()
  # True: the outputs' variables carry a leading output axis and each output keeps its own best
  # weights and stops on its own (stacked heads); False: one set of weights for all outputs.
  stacked_outputs: bool = False

  def __init__(self, config, dataset, workdir=None):
    if config.task not in self.tasks:
      raise errors.ConfigError(f'config.task={config.task!r} does not fit config.model.family='
                       f'{self.name!r}; it takes {", ".join(self.tasks)}.')
    self.config = config
    self.dataset = dataset
    self.input_kind = config.model.input
    # The (mean, std) that normalise DCT input: the training data's, or a frozen primary's own
    # (heads, which feed its features; see HeadsFamily).
    self.dct_stats = dataset.dct_stats
    self.task = config.task
    self.sources = tuple(config.sources)
    self.source_ids = tuple(dataset.source_id(s) for s in self.sources)
    for extra in ('frequency_inputs', 'pretrain_steps'):
      value = config.recipe[extra]
      if value and extra not in self.recipe_extras:
        raise errors.ConfigError(
            f'config.recipe.{extra}={value!r}: only the secondary heads '
            f'(config.model.family=heads) implement it, not {self.name!r}.')
    # Files the trainer writes into the workdir once set-up succeeded (e.g. primary.json).
    self.records: dict[str, dict] = {}

  # -- shape of the outputs
  @property
  def num_outputs(self) -> int:
    return max(len(self.sources), 1)

  def outputs(self) -> metrics.Outputs:
    raise NotImplementedError

  # -- state and constants
  def constants(self) -> dict:
    """The run's frozen pytree (DCT statistics, a frozen primary): an argument of every step."""
    mean, std = self.dct_stats
    return {'dct_mean': mean, 'dct_std': std}

  def init_variables(self, key: jax.Array) -> dict:
    """-> {'params', 'batch_stats'} of a fresh model."""
    raise NotImplementedError

  def init_state(self, key: jax.Array, optimizer) -> TrainState:
    return new_state(self.init_variables(key), optimizer)

  def pretrained_state(self, state: TrainState, key: jax.Array, optimizer) -> TrainState:
    """A run that starts from scratch (not resumed, not warm-started) -> its first state after
    any pre-training the family does (the heads' config.recipe.pretrain_steps); default: as is."""
    del key, optimizer
    return state

  # -- steps (jitted once per family instance)
  def make_train_step(self, optimizer) -> Callable:
    raise NotImplementedError

  def make_loss_step(self) -> Callable:
    raise NotImplementedError

  def make_predict_step(self) -> Callable:
    raise NotImplementedError

  def make_batch_stats_step(self) -> Callable | None:
    """-> batch_stats_step(variables, constants, batch) -> the BatchNorm statistics of this one
    batch (train-mode forward, momentum 0), for recalibrate_batch_norm; None: no BatchNorm."""
    return None

  def targets(self, batch: dict) -> np.ndarray:
    """The host label view of a batch for this family's loss."""
    raise NotImplementedError

  # -- bundles
  def variables_from_bundle(self, spec: checkpoints.ModelSpec, variables: dict, source) -> dict:
    """A model bundle's variables -> the {'params', 'batch_stats'} this family trains."""
    raise NotImplementedError

  def bundle_variables(self, trained: dict) -> dict:
    """Trained {'params', 'batch_stats'} -> the bundle's {'primary': ..., 'heads': ...}."""
    raise NotImplementedError

  def after_export(self, workdir, spec: checkpoints.ModelSpec, variables: dict) -> None:
    """Export hook: what the family adds to its model bundle (workdir/model) once the trainer has
    written it, before the final evaluation; default nothing (the heads fit their open-set
    calibration on the validation split)."""
    del workdir, spec, variables


def recalibrate_batch_norm(stats_step, variables: dict, constants, batches, active=None):
  """BatchNorm statistics for inference, averaged equally over `batches` drawn as training draws
  them ("precise BatchNorm", Wu & Johnson 2021): each batch's mean and variance, as the training
  forward normalised with them, under the weights as they are now. A moving average with few
  steps per epoch lags the weights by several hundred steps and swings with the last batches;
  inference then normalises with statistics the trained weights never saw. -> new batch_stats
  (stacked outputs: only the `active` ones change)."""
  total, count = None, 0
  for batch in batches:
    stats = stats_step(variables, constants, batch)
    total = stats if total is None else jax.tree.map(jnp.add, total, stats)
    count += 1
  if count == 0:
    return variables['batch_stats']
  averaged = jax.tree.map(lambda t: t / count, total)
  if active is None:
    return averaged
  return select_outputs(active, averaged, variables['batch_stats'])


class SingleModelFamily(Family):
  """A family that trains one module, `self.model`, on the input: its three steps are the
  module-level functions named below, bound to the model, input kind, loss and optimizer."""
  train_step_fn: Callable = None    # set with staticmethod(...) by subclasses
  loss_step_fn: Callable = None
  predict_step_fn: Callable = None
  loss_fn: Callable = None

  def _bind(self, step, **kwargs):
    return functools.partial(step, model=self.model, input_kind=self.input_kind, **kwargs)

  def make_train_step(self, optimizer):
    return jax.jit(self._bind(self.train_step_fn, loss_fn=self.loss_fn, optimizer=optimizer),
                   donate_argnums=0)

  def make_loss_step(self):
    return jax.jit(self._bind(self.loss_step_fn, loss_fn=self.loss_fn))

  def make_predict_step(self):
    return jax.jit(self._bind(self.predict_step_fn))
