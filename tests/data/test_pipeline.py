import numpy as np
import pytest

from gta_jax import errors
from gta_jax.data import builders
from gta_jax.data import pipeline


@pytest.fixture(scope='module')
def builder(smoke_data_dir):
  return pipeline.load_builder(pipeline.BUILTIN, 'smoke', smoke_data_dir)


def test_builtin_dataset_splits_labels_and_sources(builder):
  splits = builder.info.splits
  assert {s: splits[s].num_examples for s in splits} == {
      'train': 5 * 48, 'validation': 5 * 16, 'test': 5 * 24, 'test_cross_seed': 4 * 16,
      'test_external': 16}
  train = pipeline.data_source(builder, 'train')
  records = [train[i] for i in range(len(train))]
  sources = {r['source'].decode() if isinstance(r['source'], bytes) else r['source'] for r in records}
  assert sources == {'real', 'tconv', 'nearest', 'bilinear', 'pixelshuffle'}
  for r in records:
    assert r['image'].shape == (32, 32, 3) and r['image'].dtype == np.uint8
    assert r['label'] == (0 if r['source_id'] == 0 else 1)
  external = pipeline.data_source(builder, 'test_external')[0]
  assert external['image'].shape == (64, 64, 3)  # DCGAN faces at native size
  assert external['label'] == 1


def test_fakes_reconstruct_the_real_crop_of_their_index(builder):
  """Content-matched pairs (version 2): every generator's image i reconstructs real crop i, so it
  is far closer to that crop than to any other, and generators still differ from each other."""
  generation = builders.module('synthetic_fingerprints.generation')
  test = pipeline.data_source(builder, 'test')
  by_key = {}
  for i in range(len(test)):
    r = test[i]
    by_key[(int(r['source_id']), int(r['index']))] = r['image']
  indices = sorted(i for s, i in by_key if s == 0)
  for source_id in (1, 2, 3, 4):
    margins = []
    for i in indices[:8]:
      own = generation.psnr(by_key[(source_id, i)], by_key[(0, i)])
      others = max(generation.psnr(by_key[(source_id, i)], by_key[(0, j)])
                   for j in indices if j != i)
      assert own > others, (source_id, i, own, others)
      margins.append(own - others)
    assert np.mean(margins) > 3, (source_id, margins)
  assert not np.array_equal(by_key[(1, indices[0])], by_key[(3, indices[0])])
  psnr = builder.info.metadata['generator_psnr_db']
  assert set(psnr) == {'tconv', 'nearest', 'bilinear', 'pixelshuffle'}
  assert builder.info.metadata['content_matched']


def test_a_grouped_shuffle_keeps_each_group_together():
  groups = np.repeat(np.arange(7), 5)[np.random.default_rng(0).permutation(35)]
  order = pipeline.grouped_order(groups, np.random.default_rng(1))
  assert sorted(order) == list(range(35))
  seen = groups[order]
  assert (np.diff(seen) != 0).sum() == 6  # 7 blocks, each group once
  np.testing.assert_array_equal(order, pipeline.grouped_order(groups,
                                                                    np.random.default_rng(1)))
  assert not np.array_equal(order, pipeline.grouped_order(groups,
                                                                np.random.default_rng(2)))


def test_training_batches_hold_crops_beside_their_fakes(smoke_data_dir):
  """On the built-in data a shuffled training pass puts each crop beside its reconstructions:
  most images of a batch have a near copy (same content) in it; with a plain shuffle few do."""
  import ml_collections
  generation = builders.module('synthetic_fingerprints.generation')
  from gta_jax.data import loader

  def share_with_a_near_copy(group_by_content):
    config = ml_collections.ConfigDict(dict(
        name=pipeline.BUILTIN, config='smoke', data_dir=smoke_data_dir,
        release_blur_sigma=False, noise_variance=False, group_by_content=group_by_content))
    dataset = loader.open_dataset(config, 'pixel')
    images = next(dataset.batches('train', 20, seed=0, shuffle=True, drop_remainder=True))['image']
    return np.mean([max(generation.psnr(images[i], images[j]) for j in range(20) if j != i) > 20
                    for i in range(20)])

  assert share_with_a_near_copy(True) >= 0.9
  assert share_with_a_near_copy(False) <= 0.5


def test_two_runs_give_identical_batches_and_resume_mid_epoch(builder):
  source = pipeline.data_source(builder, 'train')
  kwargs = dict(seed=3, epoch=1, mode='multi')
  first = list(pipeline.batches(source, 16, **kwargs))
  second = list(pipeline.batches(source, 16, **kwargs))
  assert len(first) == 240 // 16
  for a, b in zip(first, second):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  tail = list(pipeline.batches(source, 16, start_batch=5, **kwargs))
  for a, b in zip(first[5:], tail):
    np.testing.assert_array_equal(a['image'], b['image'])
  other_epoch = next(pipeline.batches(source, 16, seed=3, epoch=2, mode='multi'))
  assert not np.array_equal(other_epoch['source_id'], first[0]['source_id'])


def test_evaluation_batches_cover_every_image_once(builder):
  source = pipeline.data_source(builder, 'validation')
  batches = list(pipeline.batches(source, 32, seed=0, shuffle=False, drop_remainder=False))
  assert len(batches) == 3 and all(b['image'].shape[0] == 32 for b in batches)
  assert sum(int(b['mask'].sum()) for b in batches) == 80
  assert not batches[-1]['mask'][16:].any()


def test_head_targets_one_vs_rest():
  targets = pipeline.head_targets(np.array([0, 1, 2, 1]), (1, 2))
  np.testing.assert_array_equal(targets, [[0, 1, 0, 1], [0, 0, 1, 0]])


def test_unknown_dataset_and_split_errors_say_what_to_do(builder, tmp_path):
  with pytest.raises(pipeline.DatasetNotPrepared, match='synthetic_fingerprints'):
    pipeline.load_builder('imagenet', 'default', str(tmp_path))
  with pytest.raises(errors.ConfigError, match='test_external'):
    pipeline.data_source(builder, 'nope')


def test_worker_processes_give_the_same_batches(builder):
  """config.data.workers > 0: grain worker processes (the pipeline pickled into each) decode and
  augment; the batches and their order are those of the training process itself."""
  source = pipeline.data_source(builder, 'train')
  kwargs = dict(seed=3, epoch=1, mode='multi', start_batch=2, rows=(4, 12))
  in_process = list(pipeline.batches(source, 16, **kwargs))
  with_workers = list(pipeline.batches(source, 16, workers=2, **kwargs))
  assert len(in_process) == len(with_workers) == 240 // 16 - 2
  for a, b in zip(in_process, with_workers):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def _high_frequency_energy(images):
  """Mean squared difference of horizontal neighbours: what a blur removes."""
  return np.mean(np.diff(images.astype(np.float64), axis=-2) ** 2, axis=(-3, -2, -1))


def test_soften_blurs_within_its_sigma_range_and_is_deterministic():
  import cv2

  from gta_jax.data import augment
  image = np.random.default_rng(0).integers(0, 256, (48, 48, 3)).astype(np.uint8)
  softest = cv2.GaussianBlur(image, (0, 0), augment.SOFTENING_SIGMA[1])
  sharpest = cv2.GaussianBlur(image, (0, 0), augment.SOFTENING_SIGMA[0])
  energies = []
  for draw in range(20):
    soft = augment.soften(image, np.random.default_rng(draw))
    np.testing.assert_array_equal(soft, augment.soften(image, np.random.default_rng(draw)))
    energies.append(_high_frequency_energy(soft))
  assert all(_high_frequency_energy(softest) <= e <= _high_frequency_energy(sharpest)
             for e in energies)
  assert np.ptp(energies) > 0.25 * _high_frequency_energy(sharpest)  # sigma varies between draws


def test_real_softening_blurs_only_real_images_of_the_training_splits(smoke_data_dir):
  """config.data.real_softening: a share of the *real* training and validation images is blurred
  (so softness alone does not say fake); fakes, test splits and DCT statistics' passes never
  change, the draw is the same on every pass (resumes), and the perturbations' draws of the
  other images stay as they were."""
  import ml_collections

  from gta_jax.data import loader

  def dataset_with(share):
    config = ml_collections.ConfigDict(dict(
        name=pipeline.BUILTIN, config='smoke', data_dir=smoke_data_dir,
        release_blur_sigma=False, noise_variance=False, real_softening=share))
    return loader.open_dataset(config, 'pixel')

  def one_pass(dataset, split, mode='clean', **kwargs):
    batches = list(dataset.batches(split, 32, seed=3, epoch=1, mode=mode, **kwargs))
    return {key: np.concatenate([b[key] for b in batches]) for key in ('image', 'label')}

  plain, all_soft, half_soft = dataset_with(0.0), dataset_with(1.0), dataset_with(0.5)
  for split in ('train', 'validation'):
    before, after = one_pass(plain, split), one_pass(all_soft, split)
    real = before['label'] == 0
    np.testing.assert_array_equal(before['image'][~real], after['image'][~real])
    assert np.all(_high_frequency_energy(after['image'][real])
                  < _high_frequency_energy(before['image'][real]))
    half = one_pass(half_soft, split)
    changed = np.any(half['image'] != before['image'], axis=(1, 2, 3))
    assert not changed[~real].any() and 0.2 < changed[real].mean() < 0.8
    np.testing.assert_array_equal(half['image'], one_pass(half_soft, split)['image'])
  for split in ('test', 'test_cross_seed'):
    np.testing.assert_array_equal(one_pass(plain, split)['image'], one_pass(all_soft, split)['image'])
  np.testing.assert_array_equal(one_pass(plain, 'train')['image'],
                                one_pass(all_soft, 'train', as_trained=False)['image'])
  multi_before, multi_after = one_pass(plain, 'train', 'multi'), one_pass(all_soft, 'train', 'multi')
  fake = multi_before['label'] == 1
  np.testing.assert_array_equal(multi_before['image'][fake], multi_after['image'][fake])


def _smoke_dataset(data_dir, **options):
  """The built-in smoke data opened with these config.data options (the rest the release's)."""
  import ml_collections

  from gta_jax.data import loader
  config = ml_collections.ConfigDict(dict(
      name=pipeline.BUILTIN, config='smoke', data_dir=data_dir, release_blur_sigma=False,
      noise_variance=False, **options))
  return loader.open_dataset(config, 'pixel')


def _one_pass(dataset, split):
  """(images, labels, content groups, source ids) of one unshuffled pass, in record order."""
  source = dataset.source(split)
  batches = list(dataset.batches(split, 32, seed=3, epoch=1))
  return (np.concatenate([b['image'][b['mask']] for b in batches]),
          np.concatenate([b['label'][b['mask']] for b in batches]),
          np.array([int(source[i]['index']) for i in range(len(source))]),
          np.array([int(source[i]['source_id']) for i in range(len(source))]))


def test_photometric_jitter_gives_a_crop_and_its_fakes_one_draw(smoke_data_dir):
  """config.data.photometric_jitter: the training and validation images, real and fake alike,
  get a random saturation / contrast / brightness / gamma, one draw per content group (the real
  crop and its reconstructions change the same way, so only the fingerprint still separates
  them); test splits never change, and a pass is the same every time (resumes)."""
  from gta_jax.data import augment

  dataset_with = lambda share: _smoke_dataset(smoke_data_dir, photometric_jitter=share)

  def by_key(dataset, split):
    images, _, groups, source_ids = _one_pass(dataset, split)
    return images, groups, source_ids

  plain, jittered, half = dataset_with(0.0), dataset_with(1.0), dataset_with(0.5)
  for split in ('train', 'validation'):
    before, groups, source_ids = by_key(plain, split)
    after, _, _ = by_key(jittered, split)
    def jittered_as_group(image, group):
      rng = augment.jitter_rng(3, 1, int(group))
      rng.uniform()  # the share's draw
      return augment.photometric_jitter(image, rng)

    for i in np.flatnonzero(source_ids == 0)[:6]:  # real crop i and its fakes: the same transform
      members = np.flatnonzero(groups == groups[i])
      assert len(members) == 5
      for j in members:
        np.testing.assert_array_equal(after[j], jittered_as_group(before[j], groups[i]))
    assert np.any(after != before, axis=(1, 2, 3)).mean() > 0.9
    halved, _, _ = by_key(half, split)
    changed_groups = {int(g) for g, c in zip(groups, np.any(halved != before, axis=(1, 2, 3))) if c}
    assert 0.2 < len(changed_groups) / len(set(groups.tolist())) < 0.8
    np.testing.assert_array_equal(halved, by_key(half, split)[0])
  for split in ('test', 'test_cross_seed'):
    np.testing.assert_array_equal(by_key(plain, split)[0], by_key(jittered, split)[0])


def test_photometric_jitter_scales_a_fingerprint_without_removing_it():
  """A pointwise transform: the difference between an image and its nearest-neighbour-upsampled
  version survives every draw (it is scaled with the contrast, never smoothed away)."""
  from gta_jax.data import augment
  rng = np.random.default_rng(0)
  image = rng.integers(40, 216, (32, 32, 3), dtype=np.uint8)
  upsampled = np.repeat(np.repeat(image[::2, ::2], 2, 0), 2, 1)
  for draw in range(20):
    a = augment.photometric_jitter(image, np.random.default_rng(draw))
    b = augment.photometric_jitter(upsampled, np.random.default_rng(draw))
    assert a.dtype == np.uint8 and a.shape == image.shape
    assert np.abs(a.astype(int) - b).mean() > 0.25 * np.abs(image.astype(int) - upsampled).mean()


@pytest.mark.slow
def test_multiseed_training_fakes_come_from_three_seeds_and_its_tests_are_the_defaults(
    smoke_data_dir):
  """`smoke_multiseed` = `smoke` but crop i's training/validation fakes come from seed i mod 3 of
  their architecture: every third is `smoke`'s own image, the others a different reconstruction
  of the same crop; test splits are `smoke`'s very images, so crosstest reads `smoke_variants`."""
  generation = builders.module('synthetic_fingerprints.generation')
  smoke = pipeline.load_builder(pipeline.BUILTIN, 'smoke', smoke_data_dir)
  multi = pipeline.load_builder(pipeline.BUILTIN, 'smoke_multiseed', smoke_data_dir)

  def images(builder, split):
    source = pipeline.data_source(builder, split)
    return {(str(r['source'], 'utf-8'), int(r['index'])): r['image']
            for r in (source[i] for i in range(len(source)))}

  for split in ('test', 'test_cross_seed', 'test_external'):
    a, b = images(smoke, split), images(multi, split)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), split
  for split, first_crop in (('train', 0), ('validation', multi.builder_config.train_size)):
    a, b = images(smoke, split), images(multi, split)
    assert a.keys() == b.keys()
    count = sum(source == 'real' for source, _ in b)
    for (source, index), image in b.items():
      same = np.array_equal(image, a[source, index])
      assert same == (source == 'real' or (first_crop + index) % 3 == 0), (split, source, index)
      if not same:  # another seed's reconstruction of the same crop, not of another one
        own = generation.psnr(image, b['real', index])
        assert own > generation.psnr(image, b['real', (index + 1) % count]), (split, source, index)
  assert multi.info.metadata['training_seeds'] == 3
  assert {f'tconv.training_seed_{k}' for k in (2, 3)} <= set(multi.info.metadata['generator_psnr_db'])
  assert pipeline.variants_config(pipeline.BUILTIN, 'smoke_multiseed') == 'smoke_variants'
  too_many = len(generation.TRAINING_SEED_OFFSETS) + 2
  with pytest.raises(ValueError, match=f'training_seeds={too_many}'):
    generation.generate_sources(32, 8, 0, 1, 0, 4, training_seeds=too_many)


def test_no_training_generator_shares_a_seed_with_a_test_generator():
  """A head trained on `multiseed*` must meet its test, cross-seed and variant generators
  unseen: every generator's seed, over every architecture of the widest config, is distinct."""
  builder = pipeline.builder_class(pipeline.BUILTIN)
  generation = builders.module('synthetic_fingerprints.generation')
  names = list(generation.TEST_SEED_OFFSETS) + list(generation.TRAINING_SEED_OFFSETS)
  for dataset_seed in (0, 1, 7):
    seeds = [generation.generator_seed(dataset_seed, name, index)
             for name in names for index in range(len(generation.ARCHITECTURES))]
    assert len(set(seeds)) == len(seeds), dataset_seed
    assert all(dataset_seed * 100 <= s < (dataset_seed + 1) * 100 for s in seeds)  # no overlap
  widest = max(c.training_seeds for c in builder.BUILDER_CONFIGS)
  assert widest == len(generation.TRAINING_SEED_OFFSETS) + 1
