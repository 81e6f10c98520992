"""Images/s of the training input pipeline (read + decode + augment + batch) per mode, and how it
scales with grain worker processes.

python benchmarks/input_pipeline.py --json out.json [--data_dir data/tfds] [--batch 64]
    [--workers N] [--modes clean,multi]

Runs gta_jax.input_pipeline.batches exactly as training calls it (config.data.workers = 0, 1, ..,
N; 0 = threads in the training process; --threads grain threads per process, default as
training), on the built-in dataset's training split at 128 px.
Scaling efficiency = (images/s with n workers) / (n x images/s with 1 worker). The training step
it must keep up with is in benchmarks/train_step.py.
"""
import os
import time

from absl import app
from absl import flags

import common  # benchmarks/common.py
from gta_jax.data import pipeline

flags.DEFINE_string('json', None, 'write the results here')
flags.DEFINE_string('data_dir', 'data/tfds', 'TFDS data_dir holding synthetic_fingerprints')
flags.DEFINE_integer('batch', 64, 'batch size')
flags.DEFINE_integer('images', 2048, 'images per measurement (after start-up)')
flags.DEFINE_integer('workers', os.cpu_count(), 'measure 0, 1, .., this many worker processes')
flags.DEFINE_list('modes', ['clean', 'multi'], 'augmentation modes to measure')
flags.DEFINE_integer('threads', None, 'grain read threads per process (default: as training, '
                     '2 without workers, 1 in each worker)')
flags.DEFINE_integer('repeats', 3, 'measurements per configuration; the fastest is reported')
FLAGS = flags.FLAGS


def images_per_sec(source, mode: str, workers: int) -> float:
  """Steady-state images/s of one configuration (start-up of threads and workers excluded)."""
  def endless():
    epoch = 0
    while True:
      yield from pipeline.batches(source, FLAGS.batch, seed=0, epoch=epoch, mode=mode,
                                        workers=workers, num_threads=FLAGS.threads)
      epoch += 1
  iterator = endless()
  for _ in range(2):  # start-up: workers spawned, first batches
    next(iterator)
  start, seen = time.perf_counter(), 0
  while seen < FLAGS.images:
    next(iterator)
    seen += FLAGS.batch
  return seen / (time.perf_counter() - start)


def main(argv):
  del argv
  builder = pipeline.load_builder(pipeline.BUILTIN, 'default', FLAGS.data_dir)
  source = pipeline.data_source(builder, 'train')
  if FLAGS.images >= len(source):
    raise SystemExit(f'--images={FLAGS.images} must be below the split ({len(source)}), so that '
                     'no epoch restart (a worker start-up) falls into a measurement')
  results = {}
  for mode in FLAGS.modes:
    rates = {n: max(images_per_sec(source, mode, n) for _ in range(FLAGS.repeats))
             for n in range(FLAGS.workers + 1)}
    results[mode] = {
        'images_per_sec': {f'{n}_workers': round(r, 1) for n, r in rates.items()},
        'scaling_efficiency': {f'{n}_workers': round(rates[n] / (n * rates[1]), 3)
                               for n in range(2, FLAGS.workers + 1)}}
    print(f'{mode}: ' + ', '.join(f'{n} workers {r:.0f} img/s' for n, r in rates.items()),
          flush=True)
  common.write_json(FLAGS.json, {'results': results, 'batch': FLAGS.batch, 'image_size': 128,
                                 'threads_per_process': FLAGS.threads,
                                 'machine': common.machine()})


if __name__ == '__main__':
  app.run(main)
