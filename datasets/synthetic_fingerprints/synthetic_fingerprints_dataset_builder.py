"""synthetic_fingerprints: the built-in, offline stand-in for GANFP.

A stand-in with real upsampling fingerprints, not GANFP: real class = crops of the colour photos
bundled in installed wheels; four fake sources = auto-encoders that differ only in their
upsampler (tconv, nearest, bilinear, pixelshuffle) and reconstruct those very crops, so each real
crop and its fakes share content (content-matched pairs, see generation.py); `test_cross_seed` =
the same architectures trained from a second seed (architecture-level attribution);
`test_external` = 64 px faces from the real pretrained DCGAN in the gan-face-generate wheel, kept
at native size. The build logs each generator's PSNR against its inputs and stores it in the
dataset's metadata (`generator_psnr_db`).

The `variants` config (and `smoke_variants`) holds the very same train/validation/test/cross-seed/
external splits as `default` (`smoke`), plus one test split per kind of generator variant
(generation.VARIANT_SPLITS: more unseen seeds, trained further, fine-tuned on other content,
retrained with an L2 loss, wider, and two unseen architectures). Each variant image records its
generator in `source` ('<architecture>.<variant>') and its architecture in `architecture` and
`source_id`. It takes ~3x the default's build time, so the quickstart does not build it;
`python -m gta_jax.crosstest` does, for any run trained on `default`.

The `multiseed` config (and `smoke_multiseed`) is `default` with three generators per
architecture behind the training and validation fakes (the main one and two more seeds, trained
alike; crop i's fake comes from generator i mod 3; `multiseed5` and `multiseed8` have five and
eight), for heads that must learn an architecture rather than one set of weights
(configs/architecture_attribution.py trains on `multiseed5`). Its real images and its test,
cross-seed and external splits are `default`'s very images, so a `default` primary applies and
crosstest reads the `variants` splits, none of whose seeds is a training seed.

Built on first use by any config that names it, or explicitly (no network):
  python -m gta_jax.prepare --dataset synthetic_fingerprints [--config smoke] [--data-dir data/tfds]
"""
import dataclasses
import io
import time

from PIL import Image
import tensorflow_datasets as tfds

from . import dcgan
from . import generation
from .. import folder_dataset

# Source ids follow the GANFP convention: real 0, then the four fake sources 1-4.
# The unseen architectures of the variant splits follow.
SOURCE_IDS = {'real': 0, 'tconv': 1, 'nearest': 2, 'bilinear': 3, 'pixelshuffle': 4,
              'dcgan_faces': 5, 'cubic': 6, 'lanczos3': 7}


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  image_size: int = 128
  train_size: int = 600
  validation_size: int = 150
  test_size: int = 250
  cross_seed_test_size: int = 250
  external_test_size: int = 250
  generator_steps: int = 200
  seed: int = 0
  variant_test_size: int = 0  # images per variant generator (0: no variant splits)
  training_seeds: int = 1  # generators per architecture behind the training/validation fakes


class Builder(tfds.core.GeneratorBasedBuilder):
  """Real crops vs four upsampling generators, plus cross-seed and external test splits."""

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'First release: 4x super-resolution generators fed other crops than the real '
               'class (23 dB; blur separated real from fake).',
      '2.0.0': 'Content-matched pairs: auto-encoders reconstruct the real crops themselves '
               '(26-28 dB); all 12 bundled colour photos; flat crops redrawn.',
  }
  _SMOKE = dict(image_size=32, train_size=48, validation_size=16, test_size=24,
                cross_seed_test_size=16, external_test_size=16, generator_steps=60)
  BUILDER_CONFIGS = [
      SyntheticConfig(name='default', description='128 px; generation takes ~4 min on 2 cores.'),
      SyntheticConfig(name='smoke', description='32 px, a few images per source, for tests.',
                      **_SMOKE),
      SyntheticConfig(name='variants', variant_test_size=100,
                      description='default + generator-variant test splits (~11 min on 2 cores).'),
      SyntheticConfig(name='smoke_variants', variant_test_size=8,
                      description='smoke + generator-variant test splits, for tests.', **_SMOKE),
      SyntheticConfig(name='multiseed', training_seeds=3,
                      description='default, but each architecture\'s training and validation '
                                  'fakes come from 3 seeds (~3 min on 2 cores).'),
      SyntheticConfig(name='multiseed5', training_seeds=5,
                      description='default, with 5 training seeds per architecture.'),
      SyntheticConfig(name='multiseed8', training_seeds=8,
                      description='default, with 8 training seeds per architecture.'),
      SyntheticConfig(name='smoke_multiseed', training_seeds=3,
                      description='smoke with 3 training seeds per architecture, for tests.',
                      **_SMOKE),
  ]
  DEFAULT_CONFIG_NAME = 'default'
  # Each config's counterpart with the variant splits (the same shared splits), for crosstest.
  # `multiseed` differs from `default` only in its training and validation fakes, so its test
  # and variant splits are `variants`' very images (the same crops, seeds and generators).
  VARIANT_CONFIGS = {'default': 'variants', 'smoke': 'smoke_variants', 'multiseed': 'variants',
                     'multiseed5': 'variants', 'multiseed8': 'variants',
                     'smoke_multiseed': 'smoke_variants'}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=folder_dataset.features(),
        supervised_keys=('image', 'label'),
        metadata=tfds.core.MetadataDict(source_ids=SOURCE_IDS, content_matched=True),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    cfg = self.builder_config
    start = time.time()
    print(f'synthetic_fingerprints/{cfg.name}: generating {cfg.image_size} px images offline...')
    per_source = cfg.train_size + cfg.validation_size + cfg.test_size
    if cfg.variant_test_size > cfg.test_size:
      raise ValueError(f'{cfg.name}: variant_test_size {cfg.variant_test_size} exceeds test_size '
                       f'{cfg.test_size} (variants reconstruct test crops).')
    main_params = {}
    sources, cross_seed, fidelity = generation.generate_sources(
        cfg.image_size, per_source, cfg.cross_seed_test_size, cfg.generator_steps, cfg.seed,
        training_count=cfg.train_size, trained_params=main_params,
        training_seeds=cfg.training_seeds, mixed_count=cfg.train_size + cfg.validation_size)
    faces = dcgan.sample_faces(cfg.external_test_size, cfg.seed + 1)
    variant_splits = {}
    if cfg.variant_test_size:
      variant_splits, variant_fidelity = generation.generate_variants(
          sources['real'], cfg.train_size, cfg.variant_test_size, main_params, faces,
          cfg.generator_steps, cfg.seed)
      fidelity |= variant_fidelity
      self.info.metadata['variant_splits'] = dict(generation.VARIANT_SPLITS)
    self.info.metadata['generator_psnr_db'] = {k: round(v, 2) for k, v in fidelity.items()}
    self.info.metadata['training_seeds'] = cfg.training_seeds
    print(f'synthetic_fingerprints/{cfg.name}: generated in {time.time() - start:.0f}s; writing.')
    bounds = {'train': (0, cfg.train_size),
              'validation': (cfg.train_size, cfg.train_size + cfg.validation_size),
              'test': (cfg.train_size + cfg.validation_size, per_source)}
    splits = {name: {source: images[lo:hi] for source, images in sources.items()}
              for name, (lo, hi) in bounds.items()}
    splits['test_cross_seed'] = cross_seed
    splits['test_external'] = {'dcgan_faces': faces}
    splits |= variant_splits
    return {name: self._generate_examples(split) for name, split in splits.items()}

  def _generate_examples(self, images_by_source):
    for source, images in images_by_source.items():
      architecture = source.split('.')[0]  # '<architecture>.<variant>' in the variant splits
      for index, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format='PNG')
        yield f'{source}_{index:06d}', {
            'image': buffer.getvalue(),
            'label': 0 if source == 'real' else 1,
            'source': source,
            'source_id': SOURCE_IDS[architecture],
            'architecture': architecture,
            'index': index,
        }
