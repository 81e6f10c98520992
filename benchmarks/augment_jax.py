"""Images/s of the device blur, crop+resize and noise (gta_jax.data.augment_jax, jitted) against
the host functions (augment.blur / crop / noise, one image at a time, OpenCV on one thread).

python benchmarks/augment_jax.py [--json out.json] [--batch 64] [--size 128] [--one_thread]

Inputs: crops of the built-in dataset's bundled photos, parameters drawn per image as the
augmentation draws them (kernel from 3/5/7/9, crop fraction U[0.05, 0.2), splits U[0, 1), noise
std U[5, 20)). Figures are the median of repeats; blur and crop outputs are compared with the
host's.
--one_thread pins XLA's CPU backend to one thread (XLA_FLAGS, set before JAX starts), so the JAX
figure is per core like the host's; without it XLA uses every core it sees.
"""
import os

import batch_flags  # before JAX: --one_thread sets XLA_FLAGS

from absl import app
import numpy as np

import common  # benchmarks/common.py
from gta_jax.data import augment
from gta_jax.data import augment_jax
from gta_jax.data import builders

FLAGS = batch_flags.FLAGS


def main(argv):
  del argv
  import cv2
  import jax
  cv2.setNumThreads(1)
  rng = np.random.default_rng(0)
  photos = builders.module('synthetic_fingerprints.generation').load_bundled_photos()
  size, batch = FLAGS.size, FLAGS.batch
  images = np.stack([
      photo[top:top + size, left:left + size] for photo in (photos[i % len(photos)]
                                                             for i in range(batch))
      for top, left in [(rng.integers(0, photo.shape[0] - size + 1),
                         rng.integers(0, photo.shape[1] - size + 1))]])
  kernels = rng.choice(augment.BLUR_KERNELS, batch).astype(np.int32)
  fraction = rng.uniform(0.05, 0.2, batch).astype(np.float32)
  split_y, split_x = rng.uniform(size=(2, batch)).astype(np.float32)
  std = rng.uniform(5, 20, batch).astype(np.float32)
  key = jax.random.PRNGKey(0)

  put = jax.device_put
  cases = {
      'blur': (lambda: augment_jax.gaussian_blur(put(images), put(kernels)),
               lambda: [augment.blur(im, int(k)) for im, k in zip(images, kernels)]),
      'crop_resize': (lambda: augment_jax.crop_resize(put(images), put(fraction), put(split_y),
                                                      put(split_x)),
                      lambda: [augment.crop(im, float(f), float(a), float(b))
                               for im, f, a, b in zip(images, fraction, split_y, split_x)]),
      'noise': (lambda: augment_jax.gaussian_noise(put(images), put(std), key),
                lambda: [augment.noise(im, float(s), rng) for im, s in zip(images, std)]),
  }
  record = {'batch': batch, 'size': size, 'repeats': FLAGS.repeats,
            'xla_threads': 1 if FLAGS.one_thread else os.cpu_count(),
            'opencv': cv2.__version__, 'opencv_ipp': bool(cv2.ipp.useIPP()),
            'machine': common.machine()}
  for name, (device_fn, host_fn) in cases.items():
    jax_s = common.median_seconds(lambda: jax.block_until_ready(device_fn()), FLAGS.repeats)
    host_s = common.median_seconds(host_fn, FLAGS.repeats)
    record[name] = {'jax_images_per_s': batch / jax_s, 'host_images_per_s_one_core': batch / host_s,
                    'jax_over_host': host_s / jax_s}
    if name != 'noise':
      diff = np.abs(np.asarray(device_fn()).astype(int) - np.stack(host_fn()).astype(int))
      record[name].update(exact_share=float((diff == 0).mean()), max_diff=int(diff.max()))
  common.write_json(FLAGS.json, record)


if __name__ == '__main__':
  app.run(main)
