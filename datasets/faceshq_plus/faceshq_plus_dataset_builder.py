"""FacesHQ+ (Faces-HQ + TPDNE StyleGAN2, with StarGANv2 as a test-only source) from user folders.

manual_dir/
  real/{real_celebahq,real_ffhq}/*                       1024 px (resized to 256) or 256 px
  fake/{stylegan_tpdne,stylegan_100k,stylegan2_tpdne}/*
  fake_testonly/starganv2_celebahq/*                     the external test split
"""
import numpy as np
import tensorflow_datasets as tfds

from .. import folder_dataset
from ..folder_dataset import Source

SOURCES = (
    Source('real/real_celebahq', 'real_celebahq', 0, 'real'),
    Source('real/real_ffhq', 'real_ffhq', 0, 'real'),
    Source('fake/stylegan_tpdne', 'stylegan_tpdne', 1, 'stylegan'),
    Source('fake/stylegan_100k', 'stylegan_100k', 2, 'stylegan'),
    Source('fake/stylegan2_tpdne', 'stylegan2_tpdne', 3, 'stylegan2'),
    Source('fake_testonly/starganv2_celebahq', 'starganv2_celebahq', 5, 'starganv2', external=True),
)
IMAGE_SIZE = 256
# The release re-saved every FacesHQ+ image (clean or augmented) as a JPEG of PIL's default
# quality 75 (data_crop.py / data_augment.py --jpeg_output); so do we. '...-png' keeps them as read.
DEFAULT = folder_dataset.FolderConfig(name='default', description='7000/1000/2000 per source',
                                      train_size=7000, validation_size=1000, test_size=2000,
                                      jpeg_quality=75)


def prepare_image(rgb: np.ndarray, path) -> np.ndarray:
  """Centre-crop to square, then skimage's default resize to 256 on float64, clip, truncate."""
  del path
  return folder_dataset.centre_crop_resize(rgb, IMAGE_SIZE)


class Builder(folder_dataset.FolderBuilder):
  """FacesHQ+: CelebA-HQ and FFHQ vs StyleGAN (TPDNE, 100K faces) and StyleGAN2 (TPDNE)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.0.0': 'First release.',
                   '1.1.0': 'Images re-saved as JPEG quality 75, as the release did.'}
  BUILDER_CONFIGS = [DEFAULT]
  SOURCES = SOURCES
  DEFAULT = DEFAULT
  # Heads may be named by architecture where it is a single source.
  EXTRA_SOURCE_IDS = {'real': 0, 'stylegan2': 3}
  prepare_image = staticmethod(prepare_image)
