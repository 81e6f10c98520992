"""The optimizer of every run: Adam at a constant or cosine rate, and an optional exponential
moving average of the weights kept in the optimizer's state.

On the built-in data phase I's weights can swing from epoch to epoch (validation loss 0.20,
0.51, 0.17 over three epochs of one seed); an average over the last hundred or so steps sits in
the middle of that swing, and its validation loss falls every epoch. (It did not make the
detector call fewer unseen photos fake: docs/research/2026-12-03-averaged-weights-detector.md.) It lives in the
optimizer state (`optax.chain(adam, track_average(decay))`), so checkpoints, resumes and the
data-parallel step carry it with nothing else changed; validation, early stopping and export
read it through `averaged_params`.
"""
from typing import Any, NamedTuple

import jax
import optax


class AverageState(NamedTuple):
  average: Any  # the averaged params, the tree of the params


def track_average(decay: float) -> optax.GradientTransformation:
  """Leaves the updates as they are and keeps `decay * average + (1 - decay) * new params`,
  starting from the params it is initialised with (a warm start's, or the initialisation's)."""
  def init(params):
    return AverageState(params)  # arrays are immutable: no copy needed

  def update(updates, state, params=None):
    if params is None:
      raise ValueError('track_average needs the params: optimizer.update(grads, state, params)')
    new = optax.apply_updates(params, updates)
    return updates, AverageState(jax.tree.map(lambda a, p: decay * a + (1 - decay) * p,
                                              state.average, new))

  return optax.GradientTransformation(init, update)


def averaged_params(opt_state):
  """The averaged params of an optimizer state that holds a track_average, else None."""
  parts = opt_state if isinstance(opt_state, tuple) else (opt_state,)
  for part in parts:
    if isinstance(part, AverageState):
      return part.average
  return None


SCHEDULES = ('constant', 'cosine')


def learning_rate_schedule(config, total_steps: int):
  """The rate per step: constant, as the release, or a cosine from it to 0 over the run's budget
  (config.optim.max_epochs epochs), so the weights a run ends with are not the last large step's."""
  rate = config.optim.learning_rate
  if config.optim.schedule == 'constant':
    return rate
  return optax.cosine_decay_schedule(rate, decay_steps=max(int(total_steps), 1), alpha=0.0)


def make_optimizer(config, total_steps: int = 0) -> optax.GradientTransformation:
  """Adam with Keras's defaults (beta 0.9/0.999, eps 1e-7) at config.optim.schedule's rate over
  `total_steps` (the run's budget); with config.optim.weight_average_decay, also a moving average
  of the weights."""
  adam = optax.adam(learning_rate_schedule(config, total_steps), config.optim.b1, config.optim.b2,
                    config.optim.eps)
  decay = config.optim.weight_average_decay
  return optax.chain(adam, track_average(decay)) if decay else adam


def evaluated_state(state):
  """What validation, early stopping and export see: the averaged weights where the optimizer
  keeps an average, else the weights as trained."""
  average = averaged_params(state.opt_state)
  return state if average is None else state.replace(params=average)
