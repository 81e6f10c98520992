import cv2
import numpy as np
import pytest

from gta_jax.data import augment

RNG = np.random.default_rng(0)


def _image(size=64):
  y, x = np.mgrid[:size, :size]
  smooth = np.stack([x * 3, y * 3, (x + y) * 2], -1) % 256
  return np.clip(smooth + RNG.integers(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize('kernel', augment.BLUR_KERNELS)
def test_blur_uses_opencv_automatic_sigma_for_the_kernel(kernel):
  image = _image()
  auto = cv2.GaussianBlur(image, (kernel, kernel), 0)  # OpenCV derives sigma from the kernel
  np.testing.assert_array_equal(augment.blur(image, kernel), auto)
  release = cv2.GaussianBlur(image, (kernel, kernel), 4)
  np.testing.assert_array_equal(augment.blur(image, kernel, sigma=4.0), release)
  if kernel < 9:
    assert not np.array_equal(auto, release)  # the release's sigma-4 bug differs


def test_crop_keeps_size_and_cuts_the_requested_sides():
  image = _image(100)
  out = augment.crop(image, 0.10, split_y=0.0, split_x=1.0)
  assert out.shape == image.shape
  # 10 rows all from the bottom, 10 columns all from the left, then bicubic back to 100x100.
  expected = cv2.resize(image[0:90, 10:100], (100, 100), interpolation=cv2.INTER_CUBIC)
  np.testing.assert_array_equal(out, expected)


def test_jpeg_quality_is_really_applied():
  image = _image()
  error = {q: np.abs(augment.jpeg(image, q).astype(int) - image).mean() for q in (10, 75, 95)}
  assert error[10] > 1.2 * error[75] > 1.2 * error[95] > 0
  assert not np.array_equal(augment.jpeg(image, 10), augment.jpeg(image, 75))


def test_noise_std_is_on_the_0_255_scale():
  image = np.full((256, 256, 3), 128, np.uint8)
  noisy = augment.noise(image, 12.0, np.random.default_rng(1))
  assert abs(noisy.astype(float).std() - 12.0) < 0.3


def test_multi_is_deterministic_per_example_and_applies_each_kind_half_the_time():
  image = _image(32)
  a = augment.augment(image, 'multi', augment.example_rng(5, 2, 17))
  b = augment.augment(image, 'multi', augment.example_rng(5, 2, 17))
  np.testing.assert_array_equal(a, b)
  changed = [not np.array_equal(augment.augment(image, 'jpeg', augment.example_rng(0, 0, i)), image)
             for i in range(200)]
  assert 0.4 < np.mean(changed) < 0.6  # single-kind modes touch half of the images
  untouched = [np.array_equal(augment.augment(image, 'multi', augment.example_rng(0, 0, i)), image)
               for i in range(200)]
  assert 0.02 < np.mean(untouched) < 0.12  # 1 - 0.5^4 = 93.75% get at least one perturbation


def test_one_applies_at_most_one_kind_each_a_fifth_of_the_time(monkeypatch):
  drawn = _record_draws(monkeypatch)
  counts = []
  for i in range(1000):
    before = len(drawn)
    augment.augment(_image(8), 'one', augment.example_rng(0, 0, i))
    counts.append(len(drawn) - before)
  assert set(counts) <= {0, 1}
  kinds = [d[0] for d in drawn]
  for kind in augment.KINDS:
    assert 0.15 < kinds.count(kind) / 1000 < 0.25
  assert 0.15 < counts.count(0) / 1000 < 0.25


def test_unknown_mode_is_named():
  with pytest.raises(ValueError, match="'sharpen'"):
    augment.augment(_image(8), 'sharpen', np.random.default_rng(0))


def _record_draws(monkeypatch, options=augment.Options()):
  """Replaces each perturbation by a recorder of its drawn parameters (image unchanged)."""
  drawn = []
  monkeypatch.setattr(augment, 'blur', lambda im, k, sigma=None: drawn.append(('blur', k, sigma)) or im)
  monkeypatch.setattr(augment, 'crop', lambda im, f, y, x: drawn.append(('crop', f, y, x)) or im)
  monkeypatch.setattr(augment, 'jpeg', lambda im, q: drawn.append(('jpeg', q)) or im)
  monkeypatch.setattr(augment, 'noise', lambda im, s, rng: drawn.append(('noise', s)) or im)
  return drawn


def test_multi_applies_each_kind_with_probability_half_in_the_release_order(monkeypatch):
  drawn = _record_draws(monkeypatch)
  order = ('blur', 'crop', 'jpeg', 'noise')
  counts = dict.fromkeys(order, 0)
  for i in range(2000):
    start = len(drawn)
    augment.augment(_image(8), 'multi', augment.example_rng(0, 0, i))
    kinds = [d[0] for d in drawn[start:]]
    assert kinds == [k for k in order if k in kinds]  # always blur -> crop -> jpeg -> noise
    for kind in kinds:
      counts[kind] += 1
  for kind in order:
    assert abs(counts[kind] / 2000 - 0.5) < 0.05, counts


def test_drawn_parameters_stay_in_the_paper_ranges(monkeypatch):
  drawn = _record_draws(monkeypatch)
  for i in range(3000):
    augment.augment(_image(8), 'multi', augment.example_rng(1, 0, i))
  by_kind = {k: [d[1:] for d in drawn if d[0] == k] for k in ('blur', 'crop', 'jpeg', 'noise')}
  assert {k for k, _ in by_kind['blur']} == {3, 5, 7, 9} and {s for _, s in by_kind['blur']} == {None}
  fractions = np.array([f for f, _, _ in by_kind['crop']])
  assert fractions.min() >= 0.05 and fractions.max() < 0.2 and fractions.max() > 0.19
  qualities = {q for (q,) in by_kind['jpeg']}
  assert min(qualities) == 10 and max(qualities) == 75
  stds = np.array([s for (s,) in by_kind['noise']])
  assert stds.min() >= 5 and stds.max() <= 20 and stds.max() > 19.5


def test_release_blur_sigma_and_noise_variance_options(monkeypatch):
  drawn = _record_draws(monkeypatch)
  options = augment.Options(release_blur_sigma=True, noise_variance=True)
  for i in range(400):
    augment.augment(_image(8), 'multi', augment.example_rng(2, 0, i), options)
  assert {d[2] for d in drawn if d[0] == 'blur'} == {4.0}
  stds = np.array([d[1] for d in drawn if d[0] == 'noise'])
  assert stds.min() >= np.sqrt(5) and stds.max() <= np.sqrt(20)  # the paper's variance U(5, 20)


def test_widening_composes_each_widening_from_its_own_stream():
  """Widening.apply: the real-only softening (per position), then the per-group jitter, each drawn from its own stream, so switching one on leaves the others'
  draws alone; fakes get only the group-wise ones; NONE returns the image untouched."""
  image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  where = dict(seed=3, epoch=1, position=5, group=2)
  np.testing.assert_array_equal(augment.Widening.NONE.apply(image, 0, **where), image)
  every = augment.Widening(real_softening=1.0, photometric_jitter=1.0)

  def by_hand(label):
    out = image
    if label == 0:
      rng = augment.softening_rng(3, 1, 5)
      rng.uniform()
      out = augment.soften(out, rng)
    rng = augment.jitter_rng(3, 1, 2)
    rng.uniform()
    return augment.photometric_jitter(out, rng)

  for label in (0, 1):
    np.testing.assert_array_equal(every.apply(image, label, **where), by_hand(label))
  # A fake's widening depends on its content group, not its position.
  moved = dict(where, position=99)
  np.testing.assert_array_equal(every.apply(image, 1, **moved), every.apply(image, 1, **where))
  assert not np.array_equal(every.apply(image, 0, **moved), every.apply(image, 0, **where))
  import ml_collections
  config = ml_collections.ConfigDict(dict(real_softening=0.5, photometric_jitter=0.25))
  assert augment.Widening.from_config(config) == augment.Widening(real_softening=0.5,
                                                                  photometric_jitter=0.25)


@pytest.mark.parametrize('mode', augment.MODES)
def test_the_record_names_exactly_the_perturbations_applied(monkeypatch, mode):
  image = _image(16)
  for i in range(40):  # the recorded variant draws as `augment` does: the same image
    recorded, applied = augment.augment_recorded(image, mode, augment.example_rng(3, 1, i))
    np.testing.assert_array_equal(recorded, augment.augment(image, mode, augment.example_rng(3, 1, i)))
    assert set(augment.applied_kinds(applied)) <= set(augment.kinds_of(mode))
  drawn = _record_draws(monkeypatch)
  for i in range(200):
    start = len(drawn)
    _, applied = augment.augment_recorded(_image(8), mode, augment.example_rng(0, 0, i))
    assert augment.applied_kinds(applied) == tuple(d[0] for d in drawn[start:])


def test_kinds_of_each_mode():
  assert augment.kinds_of('clean') == ()
  assert augment.kinds_of('multi') == augment.kinds_of('one') == augment.KINDS
  assert augment.kinds_of('jpeg') == ('jpeg',)
  with pytest.raises(ValueError, match="'glare'"):
    augment.kinds_of('glare')
