"""GANFP (Yu et al.'s four CelebA GANs + CelebA) from the user's folders, in the release's layout.

manual_dir/
  real/real_celeba/*.png         aligned CelebA (218x178, cropped to the release's 128x128) or 128x128
  fake/{sngan,progan,mmdgan,cramergan}_celeba/*.png   128x128
"""
import numpy as np

from .. import folder_dataset
from ..folder_dataset import Source

SOURCES = (
    Source('real/real_celeba', 'real', 0, 'real'),
    Source('fake/sngan_celeba', 'sngan', 1, 'sngan'),
    Source('fake/progan_celeba', 'progan', 2, 'progan'),
    Source('fake/mmdgan_celeba', 'mmdgan', 3, 'mmdgan'),
    Source('fake/cramergan_celeba', 'cramergan', 4, 'cramergan'),
)
IMAGE_SIZE = 128
DEFAULT = folder_dataset.FolderConfig(name='default', description='20000/4000/6000 per source',
                                      train_size=20000, validation_size=4000, test_size=6000)


def prepare_image(rgb: np.ndarray, path) -> np.ndarray:
  if rgb.shape[:2] == (218, 178):  # raw aligned CelebA: rows 57-184, cols 25-152, no resize
    return rgb[57:185, 25:153]
  if rgb.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
    from gta_jax.data.images import ImageReadError
    raise ImageReadError(f'{path}: {rgb.shape[1]}x{rgb.shape[0]}; GANFP images must be 128x128 '
                         '(or aligned CelebA 178x218, which is cropped as the release does)')
  return rgb


class Builder(folder_dataset.FolderBuilder):
  """GANFP: real CelebA vs SNGAN, ProGAN, MMDGAN, CramerGAN."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
  BUILDER_CONFIGS = [DEFAULT]
  SOURCES = SOURCES
  DEFAULT = DEFAULT
  prepare_image = staticmethod(prepare_image)
