"""Phase III cost with K heads trained jointly vs K separate single-head runs; head formulations.

python benchmarks/heads_scaling.py --json out.json [--images 2048 --batch 64 --image-size 128]

An "epoch-equivalent" is --images training images. Joint: the frozen primary runs once per batch
and feeds K heads in one step. Separate: K runs of one head each (the primary runs K times).
"""
import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import common  # benchmarks/common.py
from gta_jax import models, train


def heads_epoch_seconds(num_heads: int, formulation: str, images: int, batch: int, size: int):
  key = jax.random.key(0)
  optimizer = optax.adam(1e-4, 0.9, 0.999, 1e-7)
  primary = models.init_variables(models.Primary(True), key, (1, size, size, 3))
  heads = models.StackedHeads(num_heads, True, formulation=formulation)
  variables = heads.init(key, jnp.zeros((1, size // 4, size // 4, 16)))
  state = train.TrainState(jnp.zeros((), jnp.int32), variables['params'], variables['batch_stats'],
                           optimizer.init(variables['params']))
  data = {'image': np.asarray(jax.random.randint(key, (batch, size, size, 3), 0, 256), np.uint8),
          'mask': np.ones(batch, bool)}
  targets = jnp.asarray(np.random.default_rng(0).integers(0, 2, (num_heads, batch)), jnp.float32)
  stats = (np.zeros((), np.float32), np.ones((), np.float32))

  def step_fn(state, primary, data, targets, stats):
    # Same body as train.heads_train_step, but with the chosen formulation of the heads.
    x = train.preprocess(data['image'], 'pixel', *stats)
    mid = jax.lax.stop_gradient(models.Primary(True).apply(primary, x).mid_features)

    def loss_fn(params):
      out, updates = heads.apply({'params': params, 'batch_stats': state.batch_stats}, mid,
                                 train=True, mutable=['batch_stats'])
      return train.masked_bce(out.logit, targets, data['mask'][None]).sum(), updates

    (_, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    changes, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return train.TrainState(state.step + 1, optax.apply_updates(state.params, changes),
                            updates['batch_stats'], opt_state)

  step = jax.jit(step_fn)
  seconds = common.time_fn(step, state, primary, data, targets, stats, repeats=3,
                           min_seconds=1.0)
  return seconds * images / batch


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--images', type=int, default=2048)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--image-size', type=int, default=128)
  parser.add_argument('--heads', default='1,2,4,8')
  parser.add_argument('--json')
  args = parser.parse_args()
  counts = [int(k) for k in args.heads.split(',')]
  run = functools.partial(heads_epoch_seconds, images=args.images, batch=args.batch,
                          size=args.image_size)
  single = run(1, 'unrolled')
  joint = {k: run(k, 'unrolled') for k in counts}
  separate = {k: k * single for k in counts}  # K independent runs of identical cost
  formulations = {f: run(4, f) for f in ('unrolled', 'grouped', 'vmap')}
  common.write_json(args.json, {
      'joint': joint, 'separate': separate,
      'joint_over_separate': {k: joint[k] / separate[k] for k in counts},
      'formulations_k4_seconds': formulations,
      'settings': vars(args) | {'unit': 'seconds per epoch-equivalent'},
      'machine': common.machine()})


if __name__ == '__main__':
  main()
