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
from gta_jax.families import base
from gta_jax.families import losses
from gta_jax.families import proposed
from gta_jax.models import networks


def heads_epoch_seconds(num_heads: int, formulation: str, images: int, batch: int, size: int):
  key = jax.random.key(0)
  optimizer = optax.adam(1e-4, 0.9, 0.999, 1e-7)
  primary_model = networks.Primary(True)
  heads_model = networks.StackedHeads(num_heads, True, formulation=formulation)
  constants = {'dct_mean': np.zeros((), np.float32), 'dct_std': np.ones((), np.float32),
               'primary': networks.init_variables(primary_model, key, (1, size, size, 3))}
  state = base.new_state(
      networks.init_variables(heads_model, key, (1, size // 4, size // 4, 16)), optimizer)
  data = {'image': np.asarray(jax.random.randint(key, (batch, size, size, 3), 0, 256), np.uint8),
          'mask': np.ones(batch, bool)}
  targets = jnp.asarray(np.random.default_rng(0).integers(0, 2, (num_heads, batch)), jnp.float32)
  # The real phase-III step, with the chosen formulation of the heads.
  step = jax.jit(functools.partial(proposed.heads_train_step, primary_model=primary_model,
                                   heads_model=heads_model, input_kind='pixel',
                                   loss_fn=losses.sigmoid_bce, optimizer=optimizer))
  seconds = common.time_fn(step, state, constants, data, targets, jnp.ones(num_heads, bool),
                           repeats=3, min_seconds=1.0)
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
