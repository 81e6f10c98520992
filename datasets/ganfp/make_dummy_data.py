"""Writes dummy_data/: 4 tiny images per GANFP source in the release layout (run from the repo root).

python datasets/ganfp/make_dummy_data.py
"""
import pathlib

import numpy as np
from PIL import Image

HERE = pathlib.Path(__file__).parent
FOLDERS = {'real/real_celeba': ((218, 178), '{:06d}.png'),  # raw aligned CelebA size
           'fake/sngan_celeba': ((128, 128), 'SNGAN_{:08d}.png'),
           'fake/progan_celeba': ((128, 128), 'ProGAN_{:08d}.png'),
           'fake/mmdgan_celeba': ((128, 128), 'MMD_{:08d}.png'),
           'fake/cramergan_celeba': ((128, 128), 'CRAMER_{:08d}.png')}


def smooth_image(shape, seed):
  """A small-to-store image: gradients plus a seed-dependent tint."""
  y, x = np.mgrid[:shape[0], :shape[1]]
  tint = np.random.default_rng(seed).integers(0, 255, 3)
  return ((np.stack([x, y, x + y], -1) * 2 + tint) % 256).astype(np.uint8)


def main():
  for index, (folder, (shape, pattern)) in enumerate(FOLDERS.items()):
    target = HERE / 'dummy_data' / folder
    target.mkdir(parents=True, exist_ok=True)
    for number in (1, 2, 9, 10):  # 9 and 10 check numeric (not lexicographic) ordering
      Image.fromarray(smooth_image(shape, index * 100 + number)).save(target / pattern.format(number))


if __name__ == '__main__':
  main()
