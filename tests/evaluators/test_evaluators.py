"""Evaluators as plug-ins: built from config.evals, yielding named metrics the runner nests."""
import ml_collections
import numpy as np
import pytest

from gta_jax import evaluators
from gta_jax.data import loader
from gta_jax.scoring import metrics
from gta_jax.scoring import verdicts

THRESHOLDS = verdicts.Thresholds()


class _Splits:
  """A stand-in Dataset: each split a fixed list of (image mean value, label, source id)."""

  def __init__(self, splits):
    self.splits = splits
    self.modes_seen = []

  def has_split(self, split):
    return split in self.splits

  def size(self, split):
    return len(self.splits[split])

  image_size = 2

  def image_size_of(self, split):
    return 2

  def batches(self, split, batch_size, *, mode, seed):
    self.modes_seen.append((split, mode, seed))
    rows = self.splits[split]
    for start in range(0, len(rows), batch_size):
      chunk = rows[start:start + batch_size]
      pad = batch_size - len(chunk)
      values = [r[0] for r in chunk] + [0] * pad
      yield {'image': np.asarray(values, np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3),
                                                                                   np.uint8),
             'label': np.asarray([r[1] for r in chunk] + [0] * pad, np.int32),
             'source_id': np.asarray([r[2] for r in chunk] + [0] * pad, np.int32),
             'mask': np.asarray([True] * len(chunk) + [False] * pad)}


def _predict(images):
  """p_fake = mean pixel / 255; head k claims pixel values in its own band."""
  value = np.asarray(images, np.float32).mean(axis=(1, 2, 3)) / 255
  return value, np.stack([(value > 0.5) & (value < 0.7), value >= 0.7]).astype(np.float32)


def test_flatten_and_nest_round_trip_keeps_order_and_empty_groups():
  results = {'clean': {'heads': {}, 'detection': {'f1': 0.5, 'curve': [1, 2]}},
             'cross_seed': {'a': {'recall': 1.0}}}
  pairs = list(evaluators.flatten(results))
  assert pairs[0] == ('clean/heads', {}) and pairs[1] == ('clean/detection/f1', 0.5)
  assert evaluators.nest(pairs) == results and list(evaluators.nest(pairs)) == list(results)


def test_test_sets_and_cross_seed_evaluators_yield_the_metric_definitions(tmp_path):
  rows = [(0, 0, 0), (40, 0, 0), (160, 1, 1), (170, 1, 1), (200, 1, 2), (120, 1, 2)]
  dataset = _Splits({'test': rows, 'test_external': [(150, 1, 9), (20, 1, 9), (250, 1, 9), (240, 1, 9)],
                     'test_cross_seed': [(160, 1, 1), (10, 1, 1), (220, 1, 2)]})
  outputs = metrics.Outputs(True, ('a', 'b'), (1, 2), 'claims', True)
  config = ml_collections.ConfigDict({
      'test': {'type': 'test_sets', 'modes': ('clean', 'jpeg')},
      'test_cross_seed': {'type': 'cross_seed', 'split': 'test_cross_seed'}})
  built = evaluators.build(config, _predict, dataset, outputs=outputs, thresholds=THRESHOLDS,
                           batch_size=4, predictions_dir=tmp_path)
  results = evaluators.run_all(built)
  assert list(results) == ['clean', 'jpeg', 'cross_seed']
  scores = dict(np.load(tmp_path / 'clean.npz'))
  assert scores['p_fake'].shape == (6,) and scores['p_heads'].shape == (2, 6)  # padding dropped
  assert results['clean'] == _with_external(metrics.summarize(scores, outputs, THRESHOLDS))
  # External images (p_fake 0.59, 0.08, 0.98, 0.94): 3 of 4 called fake (the primary is right
  # to call them fake); head a claims 1 and head b 2 of them (a head is right not to claim).
  assert results['clean']['detection']['external_accuracy'] == pytest.approx(3 / 4)
  assert results['clean']['heads']['a']['external_accuracy'] == pytest.approx(3 / 4)
  assert results['clean']['heads']['b']['external_accuracy'] == pytest.approx(1 / 2)
  assert results['cross_seed'] == {'a': {'recall': 0.5}, 'b': {'recall': 1.0}}
  assert ('test', 'jpeg', 1004) in dataset.modes_seen  # fixed seed per test set


def _with_external(result):
  result['detection']['external_accuracy'] = 3 / 4
  for name, value in (('a', 3 / 4), ('b', 1 / 2)):
    result['heads'][name]['external_accuracy'] = value
  return result


def test_bad_evaluator_configs_name_the_key():
  with pytest.raises(ValueError, match=r'config.evals.x.type=.nope.*test_sets'):
    evaluators.build(ml_collections.ConfigDict({'x': {'type': 'nope'}}), _predict, None)
  with pytest.raises(ValueError, match='config.evals.test'):
    evaluators.build(ml_collections.ConfigDict({'test': {'type': 'test_sets', 'moods': ()}}),
                     _predict, None, outputs=None, thresholds=THRESHOLDS, batch_size=1,
                     predictions_dir=None)
  with pytest.raises(ValueError, match="unknown test set 'glare'"):
    evaluators.build(ml_collections.ConfigDict({'test': {'type': 'test_sets', 'modes': ('glare',)}}),
                     _predict, None, outputs=None, thresholds=THRESHOLDS, batch_size=1,
                     predictions_dir=None)


def test_data_to_device_is_where_batches_become_device_arrays():
  import jax
  batch = {'image': np.zeros((2, 4, 4, 3), np.uint8), 'mask': np.ones(2, bool)}
  moved = loader.to_device(batch)
  assert all(isinstance(v, jax.Array) for v in moved.values())
  np.testing.assert_array_equal(moved['image'], batch['image'])


class _NoiseAndFlat(_Splits):
  """Real images are white noise, fakes flat grey (24 x 24): a softness detector tells them."""

  image_size = 24

  def image_size_of(self, split):
    return 24

  def batches(self, split, batch_size, *, mode, seed):
    rng = np.random.default_rng(0)
    for batch in super().batches(split, batch_size, mode=mode, seed=seed):
      real = batch['label'] == 0
      images = np.full((len(real), 24, 24, 3), 128, np.uint8)
      images[real] = rng.integers(0, 256, (int(real.sum()), 24, 24, 3))
      yield dict(batch, image=images)


def _softness_detector(images):
  """p_fake = 1 when neighbouring pixels differ little (a detector that learnt 'soft = fake');
  its one head claims what it calls fake."""
  images = np.asarray(images, np.float32)
  soft = (np.abs(np.diff(images, axis=2)).mean(axis=(1, 2, 3)) < 40).astype(np.float32)
  return soft, soft[None]


def test_softened_reals_probe_scores_only_real_images_after_each_softening():
  dataset = _NoiseAndFlat({'test': [(0, 0, 0)] * 5 + [(0, 1, 1)] * 7})
  outputs = metrics.Outputs(True, ('a',), (1,), 'claims', True)
  config = ml_collections.ConfigDict({'test_softened_reals': {'type': 'softened_reals'}})

  def probe(predict):
    built = evaluators.build(config, predict, dataset, outputs=outputs, thresholds=THRESHOLDS,
                             batch_size=4, predictions_dir=None)
    return evaluators.run_all(built)['softened_real']

  results = probe(_softness_detector)
  assert set(results) == {'blur_0.7', 'blur_1.0', 'blur_1.5', 'lanczos_x1.5'}
  for kind in results:  # every softened noise image looks soft; the flat fakes are not counted
    assert results[kind] == {'false_positive_rate': 1.0, 'false_claims': 1.0}, kind
  clean = _softness_detector(next(dataset.batches('test', 5, mode='clean', seed=0))['image'])[0]
  assert not clean.any()  # unsoftened, the same real images are called real
  always_real = probe(lambda images: (np.zeros(len(images)), np.zeros((1, len(images)))))
  assert all(r == {'false_positive_rate': 0.0, 'false_claims': 0.0} for r in always_real.values())
  with pytest.raises(ValueError, match='config.evals.x.*unknown softening glare'):
    evaluators.build(ml_collections.ConfigDict({'x': {'type': 'softened_reals',
                                                      'kinds': ('glare',)}}),
                     _predict, dataset, outputs=outputs, thresholds=THRESHOLDS, batch_size=1,
                     predictions_dir=None)
