"""Images/s of the JAX JPEG round trip (gta_jax.data.jpeg_jax.jpeg_roundtrip, jitted) against
PIL's (augment.jpeg: libjpeg-turbo encode + decode, one image at a time on one core).

python benchmarks/jpeg_jax.py [--json out.json] [--batch 64] [--size 128] [--one_thread]

Inputs: crops of the built-in dataset's bundled photos, a quality per image drawn from 10..75 as
the augmentation draws it. Both figures are the median of repeats; the outputs are checked equal.
--one_thread pins XLA's CPU backend to one thread (XLA_FLAGS, set before JAX starts), so the JAX
figure is per core like PIL's; without it XLA uses every core it sees.
"""
import os

import batch_flags  # before JAX: --one_thread sets XLA_FLAGS

from absl import app
import numpy as np

import common  # benchmarks/common.py
from gta_jax.data import augment
from gta_jax.data import builders
from gta_jax.data import jpeg_jax

FLAGS = batch_flags.FLAGS


def main(argv):
  del argv
  from PIL import Image, features
  import jax
  rng = np.random.default_rng(0)
  photos = builders.module('synthetic_fingerprints.generation').load_bundled_photos()
  size, batch = FLAGS.size, FLAGS.batch
  images = np.stack([
      photo[top:top + size, left:left + size] for photo in (photos[i % len(photos)]
                                                             for i in range(batch))
      for top, left in [(rng.integers(0, photo.shape[0] - size + 1),
                         rng.integers(0, photo.shape[1] - size + 1))]])
  qualities = rng.integers(10, 76, batch).astype(np.int32)

  device_images, device_qualities = jax.device_put(images), jax.device_put(qualities)
  jax_s = common.median_seconds(lambda: jax.block_until_ready(
      jpeg_jax.jpeg_roundtrip(device_images, device_qualities)), FLAGS.repeats)
  pil_s = common.median_seconds(
      lambda: [augment.jpeg(im, int(q)) for im, q in zip(images, qualities)], FLAGS.repeats)
  same = np.array_equal(np.asarray(jpeg_jax.jpeg_roundtrip(images, qualities)),
                        np.stack([augment.jpeg(im, int(q)) for im, q in zip(images, qualities)]))
  record = {
      'batch': batch, 'size': size, 'qualities': '10..75 per image', 'repeats': FLAGS.repeats,
      'xla_threads': 1 if FLAGS.one_thread else os.cpu_count(),
      'jax_images_per_s': batch / jax_s, 'pil_images_per_s_one_core': batch / pil_s,
      'jax_over_pil': pil_s / jax_s, 'outputs_equal': bool(same),
      'pillow': Image.__version__, 'libjpeg_turbo': features.version('libjpeg_turbo'),
      'machine': common.machine(),
  }
  common.write_json(FLAGS.json, record)


if __name__ == '__main__':
  app.run(main)
