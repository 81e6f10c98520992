"""The host data path against the device data path, side by side in one run; and the training
step fed by each, against the model alone (data already on the device): which one bounds a step.

python benchmarks/data_path.py [--data_dir data/tfds] [--batch 64] [--modes multi,one]
    [--workers N] [--images 1024] [--steps 20] [--step_batch 256] [--json OUT]

Part 1, augmented images/s of each path alone, on the built-in training split (128 px) with the
built-in data's training widenings (real softening and photometric jitter, 0.5 each), as phases
II and IV draw them:
  host    pipeline.batches as training calls it, 0..N grain worker processes (0: threads in this
          process); batches stay on the host.
  device  device_path.batches over the split held in device memory, both ways of applying the
          draws ('select': every operation on the batch; 'switch': each image only through its
          own, lax.map + lax.cond); each batch blocked on.
Part 2, milliseconds per phase-II training step (the primary, Adam, batch --step_batch, mode
--step_mode) fed three ways: the model alone (one device batch reused), the device path, the host
path with no worker process (the configs' default) and with --workers workers. On a GPU the first figure is the model's bound; the path whose figure
is near it keeps the GPU busy, a larger one is the bound.

Every figure is the best of --repeats measurements after start-up (compilation, worker start).
"""
import argparse
import dataclasses
import json
import os
import time

import jax
import numpy as np

import common  # benchmarks/common.py
import train_step as train_step_benchmark  # benchmarks/train_step.py
from gta_jax.data import augment
from gta_jax.data import device_path
from gta_jax.data import loader
from gta_jax.data import pipeline
from gta_jax.models import convolution

WIDENING = augment.Widening(real_softening=0.5, photometric_jitter=0.5)  # configs/common.py


def _rate(iterator, batch: int, images: int, block) -> float:
  """Images/s of `iterator` after two start-up batches, each batch blocked on."""
  for _ in range(2):
    block(next(iterator))
  start, seen = time.perf_counter(), 0
  while seen < images:
    block(next(iterator))
    seen += batch
  return seen / (time.perf_counter() - start)


def _endless(make):
  epoch = 0
  while True:
    yield from make(epoch)
    epoch += 1


def host_batches(source, batch, mode, workers):
  return _endless(lambda epoch: pipeline.batches(
      source, batch, seed=0, epoch=epoch, mode=mode, workers=workers, widening=WIDENING))


def device_batches(split, batch, mode, strategy, label_view=lambda b: b['label']):
  return _endless(lambda epoch: device_path.batches(
      split, batch, seed=0, epoch=epoch, mode=mode, label_view=label_view, widening=WIDENING,
      strategy=strategy))


def data_paths(args, source, split) -> dict:
  results = {}
  for mode in args.modes:
    row = {}
    for workers in range(args.workers + 1):
      row[f'host_{workers}_workers'] = max(
          _rate(host_batches(source, args.batch, mode, workers), args.batch, args.images,
                lambda b: b) for _ in range(args.repeats))
    for strategy in device_path.STRATEGIES:
      row[f'device_{strategy}'] = max(
          _rate(device_batches(split, args.batch, mode, strategy), args.batch, args.images,
                lambda b: jax.block_until_ready(b[0]['image'])) for _ in range(args.repeats))
    results[mode] = {k: round(v, 1) for k, v in row.items()}
    print(f'{mode}: ' + ', '.join(f'{k} {v:.0f} img/s' for k, v in results[mode].items()),
          flush=True)
  return results


def step_times(args, source, split) -> dict:
  """ms per training step: model alone, fed by the device path, fed by the host path."""
  batch = args.step_batch
  step, (state, constants, data, labels, active) = train_step_benchmark.build(
      'primary', split.images.shape[1], batch, convolution.resolve_impl('auto'))[:2]
  data = jax.device_put(data)
  labels = jax.device_put(labels)
  label_view = lambda b: b['label'].astype(np.float32)

  def run(feed) -> float:
    nonlocal state
    for _ in range(2):  # compile, start-up
      device_batch, targets = next(feed)
      state, metrics = step(state, constants, device_batch, targets, active)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(args.steps):
      device_batch, targets = next(feed)
      state, metrics = step(state, constants, device_batch, targets, active)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / args.steps * 1e3

  def alone():
    while True:
      yield data, labels

  feeds = {
      'model_alone': lambda: alone(),
      'device_path': lambda: device_batches(split, batch, args.step_mode,
                                            device_path.default_strategy(), label_view),
  }
  for workers in sorted({0, args.workers}):
    feeds[f'host_path_{workers}_workers'] = (lambda workers: lambda: _endless(
        lambda epoch: loader.prefetch_to_device(pipeline.batches(
            source, batch, seed=0, epoch=epoch, mode=args.step_mode, workers=workers,
            widening=WIDENING), label_view)))(workers)
  results = {name: round(min(run(feed()) for _ in range(args.repeats)), 2)
             for name, feed in feeds.items()}
  for name, ms in results.items():
    print(f'step, batch {batch}, {args.step_mode}: {name} {ms:.1f} ms '
          f'({batch / ms * 1e3:.0f} img/s)', flush=True)
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data_dir', default='data/tfds')
  parser.add_argument('--dataset_config', default='default', help='built-in data config (tests: smoke)')
  parser.add_argument('--batch', type=int, default=64, help='batch of part 1')
  parser.add_argument('--modes', type=lambda s: s.split(','), default=['multi', 'one'])
  parser.add_argument('--workers', type=int, default=os.cpu_count())
  parser.add_argument('--images', type=int, default=1024, help='images per measurement')
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--steps', type=int, default=20, help='steps per measurement (part 2)')
  parser.add_argument('--step_batch', type=int, default=256)
  parser.add_argument('--step_mode', default='one')
  parser.add_argument('--skip_steps', action='store_true', help='part 1 only')
  parser.add_argument('--skip_paths', action='store_true', help='part 2 only')
  parser.add_argument('--json')
  args = parser.parse_args()
  builder = pipeline.load_builder(pipeline.BUILTIN, args.dataset_config, args.data_dir)
  source = pipeline.data_source(builder, 'train')
  split = device_path.load_split(source, budget_bytes=float('inf'))
  record = {'backend': jax.default_backend(), 'image_size': split.images.shape[1], 'widening': dataclasses.asdict(WIDENING),
            'args': vars(args)}
  if not args.skip_paths:
    record['data_paths_images_per_s'] = data_paths(args, source, split)
  if not args.skip_steps:
    record['step_ms'] = step_times(args, source, split)
  record['machine'] = common.machine()
  common.write_json(args.json, json.loads(json.dumps(record, default=str)))


if __name__ == '__main__':
  main()
