"""Writes dummy_data/: 4 tiny images per FacesHQ+ source in the release layout (run from the repo root).

python datasets/faceshq_plus/make_dummy_data.py
"""
import pathlib

import numpy as np
from PIL import Image

HERE = pathlib.Path(__file__).parent
FOLDERS = ('real/real_celebahq', 'real/real_ffhq', 'fake/stylegan_tpdne', 'fake/stylegan_100k',
           'fake/stylegan2_tpdne', 'fake_testonly/starganv2_celebahq')


def smooth_image(shape, seed):
  y, x = np.mgrid[:shape[0], :shape[1]]
  tint = np.random.default_rng(seed).integers(0, 255, 3)
  return ((np.stack([x, y, x + y], -1) + tint) % 256).astype(np.uint8)


def main():
  for index, folder in enumerate(FOLDERS):
    target = HERE / 'dummy_data' / folder
    target.mkdir(parents=True, exist_ok=True)
    for number in (1, 2, 9, 10):
      # 256 px as stored, and a non-square larger one that is centre-cropped and resized.
      shape = (256, 256) if number % 2 else (300, 280)
      Image.fromarray(smooth_image(shape, index * 100 + number)).save(
          target / f'{number}.jpg', quality=90)


if __name__ == '__main__':
  main()
