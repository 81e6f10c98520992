"""Images/s of the input pipeline (decode + augment + batch) at 128 px, clean and multi-augmented.

python benchmarks/input_pipeline.py --json out.json [--data-dir data/tfds] [--batch 64]

Compares grain in-process reading (0 and 2 threads) with 2 worker processes (mp_prefetch), on the
built-in dataset's training split. The training step it feeds is in benchmarks/train_step.py.
"""
import functools
import time

from absl import app, flags

import common  # benchmarks/common.py
import grain
from gta_jax import input_pipeline

flags.DEFINE_string('json', None, 'write the results here')
flags.DEFINE_string('data_dir', 'data/tfds', 'TFDS data_dir holding synthetic_fingerprints')
flags.DEFINE_integer('batch', 64, 'batch size')
flags.DEFINE_integer('images', 2048, 'images per measurement')
FLAGS = flags.FLAGS


def images_per_sec(iterator, batch: int, images: int) -> float:
  next(iterator)  # start-up (threads, workers) is not throughput
  start, seen = time.perf_counter(), 0
  while seen < images:
    next(iterator)
    seen += batch
  return seen / (time.perf_counter() - start)


def _decode_at(position, record, mode):
  return input_pipeline._decode(record, 0, 0, position, mode)


def main(argv):
  del argv
  builder = input_pipeline.load_builder(input_pipeline.BUILTIN, 'default', FLAGS.data_dir)
  source = input_pipeline.data_source(builder, 'train')
  results = {}
  for mode in ('clean', 'multi'):
    for threads in (0, 2):
      def endless(threads=threads, mode=mode):
        epoch = 0
        while True:
          yield from input_pipeline.batches(source, FLAGS.batch, seed=0, epoch=epoch, mode=mode,
                                            num_threads=threads)
          epoch += 1
      results[f'{mode}_in_process_{threads}_threads'] = images_per_sec(
          endless(), FLAGS.batch, FLAGS.images)
    # Worker processes pickle the pipeline: plain partials, nothing that holds absl's FLAGS.
    batch = FLAGS.batch
    dataset = (grain.MapDataset.source(source).shuffle(seed=0).repeat()
               .map_with_index(functools.partial(_decode_at, mode=mode))
               .batch(batch, batch_fn=functools.partial(input_pipeline._pad_batch,
                                                        batch_size=batch))
               .to_iter_dataset()
               .mp_prefetch(grain.MultiprocessingOptions(num_workers=2)))
    results[f'{mode}_2_worker_processes'] = images_per_sec(iter(dataset), FLAGS.batch, FLAGS.images)
  common.write_json(FLAGS.json, {'images_per_sec': results, 'batch': FLAGS.batch,
                                 'image_size': 128, 'machine': common.machine()})


if __name__ == '__main__':
  app.run(main)
