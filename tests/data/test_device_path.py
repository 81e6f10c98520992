"""The device data path: the host path's order and batches, draws keyed by (seed, epoch, index),
the same images whichever way they are applied, and the host's distributions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gta_jax import errors
from gta_jax.data import augment
from gta_jax.data import augment_jax
from gta_jax.data import device_path
from gta_jax.data import pipeline


def _source(count=40, size=32, seed=0):
  rng = np.random.default_rng(seed)
  return [{'image': rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
           'label': np.int64(i % 2), 'source_id': np.int64(i % 3), 'index': np.int64(i // 2)}
          for i in range(count)]


def _labels(batch):
  return batch['label'].astype(np.float32)


def _run(split, mode, **kwargs):
  """[(images, perturbation bits, labels)] of one epoch on the device path, as numpy."""
  return [(np.asarray(b['image']), np.asarray(b['perturbations']), np.asarray(b['label']))
          for b, _ in device_path.batches(split, 8, mode=mode, label_view=_labels, **kwargs)]


def test_auto_is_the_device_on_an_accelerator_and_the_host_on_a_cpu():
  assert device_path.resolve('auto', 'cpu') == 'host'
  assert device_path.resolve('auto', 'gpu') == 'device'
  assert device_path.resolve('device', 'cpu') == 'device'
  with pytest.raises(errors.ConfigError, match='config.data.augment_on'):
    device_path.resolve('gpu')


@pytest.mark.parametrize('grouped', [False, True])
def test_without_draws_the_device_path_gives_the_host_paths_batches(grouped):
  """Same order (grain's shuffle, or the content-grouped one), full batches, resumed mid-epoch:
  with nothing to draw the two paths give identical batches and labels."""
  source = _source()
  groups = np.array([int(r['index']) for r in source]) if grouped else None
  split = device_path.load_split(source, budget_bytes=1e9)
  host = list(pipeline.batches(source, 8, seed=3, epoch=2, shuffle=True, drop_remainder=True,
                               start_batch=1, groups=groups))
  device = list(device_path.batches(split, 8, seed=3, epoch=2, mode='clean', label_view=_labels,
                                    groups=groups, start_batch=1))
  assert len(device) == len(host) == 4
  for h, (d, targets) in zip(host, device):
    for key in ('image', 'label', 'source_id', 'mask', 'perturbations'):
      np.testing.assert_array_equal(np.asarray(d[key]), h[key], err_msg=key)
    np.testing.assert_array_equal(np.asarray(targets), _labels(h))


def test_a_split_over_the_budget_is_streamed_from_host_memory_with_the_same_batches():
  source = _source()
  held = device_path.load_split(source, budget_bytes=1e9)
  streamed = device_path.load_split(source, budget_bytes=0)
  assert held.on_device and not streamed.on_device
  settings = dict(seed=5, epoch=1, mode='one', widening=augment.Widening(0.5, 0.5))
  for a, b in zip(_run(held, **settings), _run(streamed, **settings)):
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)


def test_selecting_and_switching_apply_the_same_draws_to_the_same_pixels():
  """`select` (every operation on the batch, each image keeps its own: an accelerator) and
  `switch` (each image only through its draws: the CPU) are the same function."""
  split = device_path.load_split(_source(), budget_bytes=1e9)
  settings = dict(seed=1, epoch=0, mode='one', widening=augment.Widening(0.5, 0.5))
  selected, switched = (_run(split, strategy=s, **settings) for s in ('select', 'switch'))
  for a, b in zip(selected, switched):
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
  assert len(np.unique(np.concatenate([bits for _, bits, _ in selected]))) == 5  # none + 4 kinds


def test_an_images_draws_depend_on_seed_epoch_and_index_only():
  """The same record gets the same augmentation whatever its batch, position or batch size (so a
  resumed run and another process see the same images), another epoch or seed other ones."""
  source = _source()
  split = device_path.load_split(source, budget_bytes=1e9)
  index = np.arange(12, dtype=np.int32)
  images = np.stack([r['image'] for r in source[:12]])
  label = np.array([r['label'] for r in source[:12]], np.int32)
  group = index // 2
  settings = dict(mode='multi', options=augment.Options(), widening=augment.Widening(0.5, 0.5))
  whole = device_path.augment_batch(images, index, group, label, 7, 3, **settings)
  reversed_ = device_path.augment_batch(images[::-1], index[::-1], group[::-1], label[::-1], 7, 3,
                                        **settings)
  half = device_path.augment_batch(images[4:8], index[4:8], group[4:8], label[4:8], 7, 3,
                                   **settings)
  np.testing.assert_array_equal(np.asarray(whole[0]), np.asarray(reversed_[0])[::-1])
  np.testing.assert_array_equal(np.asarray(whole[0])[4:8], np.asarray(half[0]))
  other_epoch = device_path.augment_batch(images, index, group, label, 7, 4, **settings)
  other_seed = device_path.augment_batch(images, index, group, label, 8, 3, **settings)
  assert not np.array_equal(np.asarray(whole[0]), np.asarray(other_epoch[0]))
  assert not np.array_equal(np.asarray(whole[0]), np.asarray(other_seed[0]))
  assert len(split) == 40


def test_the_draws_keys_are_none_of_the_training_steps_keys():
  """The training steps fold their keys from fold_in(key(seed), 1) and the step number (the heads'
  patch windows, DNA-Det's crops and dropout; split(k)[i] is fold_in(k, i)). No image's key, nor
  any key its draws split from it, is one of them."""
  seed = 3
  steps = jax.vmap(lambda s: jax.random.fold_in(
      jax.random.fold_in(jax.random.key(seed), 1), s))(jnp.arange(64))
  step_keys = {tuple(k) for k in np.asarray(jax.random.key_data(jnp.concatenate(
      [steps, jax.vmap(jax.random.split)(steps).reshape(-1)])))}
  index = jnp.arange(64, dtype=jnp.int32)
  for epoch in range(3):
    perturb, soften, jitter = device_path.image_keys(seed, epoch, index, index)
    children = [jax.vmap(lambda k, n=n: jax.random.split(k, n))(keys).reshape(-1)
                for keys, n in ((perturb, 10), (soften, 2), (jitter, 6))]
    drawn = np.asarray(jax.random.key_data(jnp.concatenate([perturb, soften, jitter] + children)))
    assert not step_keys & {tuple(k) for k in drawn}, epoch


def test_each_drawn_perturbation_is_the_jax_operation_with_its_drawn_parameters():
  """Reproducible per image: an image's output is the named operations applied in order with the
  parameters its key draws (noise included, from its own key)."""
  source = _source(count=24)
  images = np.stack([r['image'] for r in source])
  index = np.arange(24, dtype=np.int32)
  label = np.zeros(24, np.int32)
  settings = dict(mode='multi', options=augment.Options(), widening=augment.Widening.NONE)
  out, bits = device_path.augment_batch(images, index, index, label, 2, 0, **settings)
  d = device_path.draws(2, 0, index, index, label, **settings)
  expected = images
  from gta_jax.data import jpeg_jax
  ops = {'blur': lambda x: augment_jax.gaussian_blur(x, d['kernel']),
         'crop': lambda x: augment_jax.crop_resize(x, d['fraction'], d['split_y'], d['split_x']),
         'jpeg': lambda x: jpeg_jax.jpeg_roundtrip(x, d['quality']),
         'noise': lambda x: augment_jax.gaussian_noise(x, d['std'], d['noise_key'])}
  for kind in augment.KINDS:
    flag = np.asarray(d[kind])
    expected = np.where(flag[:, None, None, None], np.asarray(ops[kind](expected)), expected)
    np.testing.assert_array_equal(augment.touched(np.asarray(bits), kind), flag)
  np.testing.assert_array_equal(np.asarray(out), expected)


@pytest.mark.parametrize('mode', augment.MODES)
def test_every_mode_draws_the_host_distribution(mode):
  """Each mode's share of each perturbation, and its parameters' ranges, as augment.py draws
  them (4,000 images: a share within 4 standard errors)."""
  n = 4000
  index = np.arange(n, dtype=np.int32)
  d = device_path.draws(0, 0, index, index // 2, index % 2, mode=mode, options=augment.Options(),
                        widening=augment.Widening(0.5, 0.5))
  chosen = np.stack([np.asarray(d[k]) if k in d else np.zeros(n, bool) for k in augment.KINDS], 1)
  host_rng = np.random.default_rng(0)
  host_bits = np.array([augment.augment_recorded(np.zeros((8, 8, 3), np.uint8), mode,
                                                 host_rng)[1] for _ in range(n)])
  host_chosen = np.stack([augment.touched(host_bits, k) for k in augment.KINDS], 1)
  share, host_share = chosen.mean(0), host_chosen.mean(0)
  assert np.all(np.abs(share - host_share) <= 4 * np.sqrt(2 * 0.25 / n) + 1e-9), (share, host_share)
  if mode in ('multi', 'one'):
    assert np.array_equal(np.unique(np.asarray(d['kernel'])), augment.BLUR_KERNELS)
    assert 0.05 <= np.asarray(d['fraction']).min() and np.asarray(d['fraction']).max() < 0.2
    assert set(np.unique(np.asarray(d['quality']))) == set(range(10, 76))
    assert 5 <= np.asarray(d['std']).min() and np.asarray(d['std']).max() < 20
  if mode == 'one':
    assert chosen.sum(1).max() == 1
  soften = np.asarray(d['soften'])
  assert not soften[index % 2 == 1].any()  # real images only
  assert abs(soften[index % 2 == 0].mean() - 0.5) < 4 * np.sqrt(0.25 / (n / 2))
  sigma = np.asarray(d['sigma'])
  assert augment.SOFTENING_SIGMA[0] <= sigma.min() and sigma.max() <= augment.SOFTENING_SIGMA[1]
  jitter = np.asarray(d['jitter'])  # one draw per content group: a crop and its fake agree
  np.testing.assert_array_equal(jitter[0::2], jitter[1::2])
  grey = np.asarray(d['saturation']) == 0
  assert abs(grey[jitter].mean() - augment.JITTER_GREY_SHARE) < 0.05


def test_softening_and_jitter_match_the_host_functions():
  """soften: OpenCV's 8U kernel for every sigma (20,001 of them), bit-exact images;
  photometric jitter: within 1 level, given the same factors."""
  rng = np.random.default_rng(0)
  sigma = np.exp(np.linspace(np.log(0.4), np.log(2.5), 20001)).astype(np.float32)
  taps = np.asarray(augment_jax.sigma_taps(sigma))
  for s, row in zip(sigma[::7], taps[::7]):
    k = int(round(float(s) * 6 + 1)) | 1
    expected = np.zeros(augment_jax.SOFTEN_MAX_KERNEL, int)
    pad = (augment_jax.SOFTEN_MAX_KERNEL - k) // 2
    expected[pad:pad + k] = augment_jax._gaussian_fixed(k, float(s))
    np.testing.assert_array_equal(row, expected, err_msg=str(s))
  images = rng.integers(0, 256, (8, 48, 40, 3), dtype=np.uint8)
  draws = np.exp(rng.uniform(np.log(0.4), np.log(2.5), 8)).astype(np.float32)
  out = np.asarray(augment_jax.soften(images, draws))
  for image, s, o in zip(images, draws, out):
    np.testing.assert_array_equal(o, augment.gaussian_blur(image, float(s)))
  factors = [augment.jitter_factors(rng) for _ in range(8)]
  out = np.asarray(augment_jax.photometric_jitter(
      images, *(np.array(f, np.float32) for f in zip(*factors))))
  expected = np.stack([augment.apply_photometric_jitter(image, *(float(np.float32(v)) for v in f))
                       for image, f in zip(images, factors)])
  difference = np.abs(out.astype(int) - expected)
  assert difference.max() <= 1 and (difference == 0).mean() > 0.999


def test_a_split_of_mixed_sizes_is_refused_naming_the_record():
  source = _source(count=4)
  source[2] = dict(source[2], image=np.zeros((16, 16, 3), np.uint8))
  with pytest.raises(errors.ConfigError, match='record 2.*augment_on=host'):
    device_path.load_split(source, budget_bytes=1e9)


def test_a_split_larger_than_the_memory_available_is_refused_before_reading(monkeypatch):
  source = _source(count=4)
  monkeypatch.setattr(device_path, 'available_memory_bytes', lambda: 4 * source[0]['image'].size)
  with pytest.raises(errors.ConfigError, match='train split.*augment_on=host'):
    device_path.load_split(source, budget_bytes=1e9)
  monkeypatch.setattr(device_path, 'available_memory_bytes', lambda: None)  # unknown: reads it
  assert len(device_path.load_split(source, budget_bytes=1e9)) == 4
