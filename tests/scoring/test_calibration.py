"""Calibration figures, temperature scaling and operating points chosen on validation."""
import dataclasses

import numpy as np
import pytest

from gta_jax import errors
from gta_jax.io import checkpoints
from gta_jax.scoring import calibration
from gta_jax.scoring import metrics
from gta_jax.scoring import verdicts


def _sigmoid(z):
  return 1 / (1 + np.exp(-z))


def test_ece_uses_equal_mass_bins_as_worked_by_hand():
  # Two bins of two images: {0.1, 0.2} holds one positive (0.15 vs 0.5: 0.35 off), {0.8, 0.9}
  # two (0.85 vs 1: 0.15 off); each bin is half the images.
  p, labels = np.array([0.9, 0.1, 0.8, 0.2]), np.array([1, 0, 1, 1])
  assert calibration.ece(labels, p, bins=2) == pytest.approx(0.25)
  table = calibration.reliability(labels, p, bins=2)
  assert table == {'score': pytest.approx([0.15, 0.85]), 'frequency': [0.5, 1.0], 'count': [2, 2]}
  assert calibration.brier(labels, p) == pytest.approx((0.01 + 0.01 + 0.04 + 0.64) / 4)


def test_ece_is_small_for_calibrated_scores_and_large_for_overconfident_ones():
  rng = np.random.default_rng(0)
  z = rng.normal(0, 2, 50_000)
  labels = rng.random(z.size) < _sigmoid(z)
  assert calibration.ece(labels, _sigmoid(z)) < 0.01
  assert calibration.ece(labels, _sigmoid(3 * z)) > 0.05  # the same ranking, three times as sure


def test_nll_of_a_saturated_float32_score_is_finite_and_says_so():
  p = np.array([1.0, 0.0], np.float32)  # float32 sigmoids of large logits
  assert calibration.nll([0, 1], p) == pytest.approx(24 * np.log(2))
  assert calibration.nll([1, 0], p) == pytest.approx(-np.log1p(-2.0 ** -24))
  assert np.isfinite(calibration.logit(p)).all()


def test_fitted_temperature_recovers_the_one_the_labels_were_drawn_with():
  rng = np.random.default_rng(1)
  z = rng.normal(0, 4, 40_000)
  labels = rng.random(z.size) < _sigmoid(z / 2.5)  # the network is 2.5x overconfident
  p = _sigmoid(z).astype(np.float32)
  t = calibration.fit_temperature(labels, p)
  assert t == pytest.approx(2.5, rel=0.05)
  assert calibration.nll(labels, calibration.scaled(p, t)) < calibration.nll(labels, p)
  # One class only: no temperature can be fitted.
  assert calibration.fit_temperature(np.ones(10, bool), p[:10]) is None


def test_temperature_changes_no_ranking_and_no_verdict_at_one_half():
  p = np.array([0.01, 0.3, 0.5, 0.7, 0.999], np.float32)
  for t in (0.5, 2.0):
    q = calibration.scaled(p, t)
    assert (np.argsort(q) == np.argsort(p)).all()
    assert ((q >= 0.5) == (p >= 0.5)).all()


def test_threshold_at_fpr_claims_at_most_that_share_of_validation_negatives():
  rng = np.random.default_rng(2)
  p = rng.random(1000).astype(np.float32)
  labels = np.zeros(1000, bool)
  for fpr in (0.01, 0.05):
    t = calibration.threshold_at_fpr(labels, p, fpr)
    claimed = p >= np.float32(t)
    assert claimed.sum() == int(fpr * 1000)  # exactly the allowed number: distinct scores
  # Ties at the top: 30 negatives share the highest score; 1% (10) may be claimed, so none is.
  tied = np.r_[np.full(30, 0.99, np.float32), p[:970] * 0.5]
  t = calibration.threshold_at_fpr(np.zeros(1000, bool), tied, 0.01)
  assert (tied >= np.float32(t)).sum() == 0
  assert calibration.threshold_at_fpr(np.ones(5, bool), p[:5], 0.01) is None


def test_the_operating_point_is_chosen_on_validation_and_its_test_fpr_reported():
  rng = np.random.default_rng(3)
  val_labels = rng.random(2000) < 0.5
  val = np.where(val_labels, rng.normal(2, 1, 2000), rng.normal(0, 1, 2000))
  record = calibration.fit_output(val_labels, _sigmoid(val).astype(np.float32))
  # The test set is shifted (its negatives score higher): the validation threshold no longer
  # holds 1%, and the figures say so instead of re-choosing it on the test set.
  test_labels = rng.random(2000) < 0.5
  test = np.where(test_labels, rng.normal(2, 1, 2000), rng.normal(0.7, 1, 2000))
  figures = calibration.output_figures(test_labels, _sigmoid(test).astype(np.float32), record)
  at_1 = figures['tpr_at_fpr_1pct']
  assert at_1['threshold'] == record['fpr_thresholds']['0.01']
  assert at_1['fpr'] > 0.02 and 0 < at_1['tpr'] < 1
  assert figures['calibrated']['temperature'] == record['temperature']
  assert set(figures) >= {'ece', 'nll', 'brier', 'reliability', 'tpr_at_fpr_5pct'}


def test_summarize_reports_calibration_for_every_output():
  rng = np.random.default_rng(4)
  n = 400
  source = rng.integers(0, 3, n)
  scores = {'label': (source > 0).astype(np.int64), 'source_id': source,
            'p_fake': rng.random(n).astype(np.float32),
            'p_heads': rng.random((2, n)).astype(np.float32)}
  outputs = metrics.Outputs(detection=True, head_names=('a', 'b'), head_ids=(1, 2))
  plain = metrics.summarize(scores, outputs, verdicts.Thresholds())
  for figures in [plain['detection']] + list(plain['heads'].values()):
    assert figures['ece'] is not None and figures['nll'] > 0 and 'calibrated' not in figures
    assert figures['tpr_at_fpr_1pct'] == {'threshold': None, 'tpr': None, 'fpr': None}
  fitted = calibration.Calibration(
      detection=calibration.fit_output(scores['label'] != 0, scores['p_fake']),
      heads=(calibration.fit_output(source == 1, scores['p_heads'][0]), None))
  result = metrics.summarize(scores, dataclasses.replace(outputs, calibration=fitted),
                             verdicts.Thresholds())
  assert 'calibrated' in result['detection'] and 'calibrated' in result['heads']['a']
  assert 'calibrated' not in result['heads']['b']  # a head without a record: as it is
  assert result['heads']['a']['tpr_at_fpr_5pct']['tpr'] is not None
  # The figures of the scores as they are do not depend on the calibration.
  assert result['detection']['ece'] == plain['detection']['ece']


def _spec(**calibration_record):
  return checkpoints.ModelSpec(input_kind='pixel', image_size=32, head_names=('a',),
                               primary_digest='0' * 64, calibration=calibration_record)


def test_a_bundle_keeps_its_calibration_and_refuses_a_broken_one():
  record = {'detection': {'temperature': 1.5, 'fpr_thresholds': {'0.01': 0.9, '0.05': 0.7}},
            'heads': [None]}
  spec = _spec(**record)
  assert checkpoints.ModelSpec.from_json(spec.to_json(), 'x').calibration == record
  bad = spec.to_json() | {'calibration': {'detection': {'temperature': -1}, 'heads': [None]}}
  with pytest.raises(errors.ConfigError, match=r'calibration.detection.temperature'):
    checkpoints.ModelSpec.from_json(bad, 'model.json')
  short = spec.to_json() | {'calibration': {'detection': None, 'heads': []}}
  with pytest.raises(errors.ConfigError, match=r'0 records for 1 heads'):
    checkpoints.ModelSpec.from_json(short, 'model.json')
