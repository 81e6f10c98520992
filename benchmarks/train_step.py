"""Images/s of the jitted train step (Adam, BatchNorm updates), and achieved GFLOP/s vs peak.

python benchmarks/train_step.py --model primary --image-size 128 --batch 256 --json out.json
"""
import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import common  # benchmarks/common.py
from gta_jax import models, train


def build(model: str, image_size: int, batch: int):
  """-> (jitted step, state, batch) for one of the four networks."""
  key = jax.random.key(0)
  optimizer = optax.adam(1e-3, 0.9, 0.999, 1e-7)
  input_kind = 'dct' if model == 'primary_dct' else 'pixel'
  channels = 1 if input_kind == 'dct' else 3
  images = np.asarray(jax.random.randint(key, (batch, image_size, image_size, 3), 0, 256), np.uint8)
  data = {'image': images, 'label': np.arange(batch, dtype=np.int32) % 2,
          'mask': np.ones(batch, bool), 'source_id': np.zeros(batch, np.int32)}
  stats = (np.zeros((image_size, image_size), np.float32), np.ones((image_size, image_size), np.float32))
  if model in ('primary', 'primary_dct'):
    variables = models.init_variables(models.Primary(input_kind == 'pixel'), key,
                                      (1, image_size, image_size, channels))
    state = train.TrainState(jnp.zeros((), jnp.int32), variables['params'],
                             variables['batch_stats'], optimizer.init(variables['params']))
    step = jax.jit(functools.partial(train.detection_train_step, gap=input_kind == 'pixel',
                                     input_kind=input_kind, optimizer=optimizer))
    return step, (state, data, stats)
  module = {'gandct': models.GanDctConv(1), 'postpool': models.GanfpPostpool(1)}[model]
  params = models.init_variables(module, key, (1, image_size, image_size, channels))['params']
  state = train.TrainState(jnp.zeros((), jnp.int32), params, {}, optimizer.init(params))
  step = jax.jit(functools.partial(train.baseline_train_step, module=module,
                                   input_kind=input_kind, optimizer=optimizer))
  return step, (state, data, data['label'].astype(np.float32), stats)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--model', default='primary', choices=['primary', 'primary_dct', 'gandct', 'postpool'])
  parser.add_argument('--image-size', type=int, default=128)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--json')
  args = parser.parse_args()
  step, step_args = build(args.model, args.image_size, args.batch)
  seconds = common.time_fn(step, *step_args)
  flops = common.flops_of(step, *step_args)
  peak = common.matmul_peak_gflops()
  achieved = flops / seconds / 1e9 if flops else None
  common.write_json(args.json, {
      'model': args.model, 'image_size': args.image_size, 'batch': args.batch,
      'images_per_sec': args.batch / seconds, 'seconds_per_step': seconds,
      'gflop_per_step': flops / 1e9 if flops else None, 'achieved_gflops': achieved,
      'matmul_peak_gflops': peak, 'fraction_of_peak': achieved / peak if achieved else None,
      'machine': common.machine()})


if __name__ == '__main__':
  main()
