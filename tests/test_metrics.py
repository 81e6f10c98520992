"""Metric functions against hand-worked cases and scikit-learn (a test-only comparison)."""
import numpy as np
import pytest
from sklearn import metrics as skm

from gta_jax import metrics


def test_binary_metrics_hand_worked():
  labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
  scores = np.array([0.9, 0.5, 0.2, 0.7, 0.1, 0.49, 0.3, 0.8])
  # predicted (>= 0.5): 1 1 0 1 0 0 0 1 -> tp 3, fp 1, fn 1, tn 3
  m = metrics.binary_metrics(labels, scores)
  assert (m['tp'], m['fp'], m['fn'], m['tn']) == (3, 1, 1, 3)
  assert m['accuracy'] == 0.75 and m['precision'] == 0.75 and m['recall'] == 0.75
  assert m['f1'] == pytest.approx(0.75)


@pytest.mark.parametrize('seed', range(5))
def test_curves_and_areas_match_scikit_learn(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, 200)
  scores = np.round(rng.uniform(0, 1, 200) * 0.6 + labels * 0.3, 2)  # ties on purpose
  m = metrics.binary_metrics(labels, scores)
  predicted = scores >= 0.5
  assert m['precision'] == pytest.approx(skm.precision_score(labels, predicted))
  assert m['recall'] == pytest.approx(skm.recall_score(labels, predicted))
  assert m['f1'] == pytest.approx(skm.f1_score(labels, predicted))
  assert m['roc_auc'] == pytest.approx(skm.roc_auc_score(labels, scores))
  precision, recall, _ = skm.precision_recall_curve(labels, scores)
  ours_p, ours_r = metrics.pr_curve(labels, scores)
  np.testing.assert_allclose(ours_p, precision)
  np.testing.assert_allclose(ours_r, recall)
  assert m['pr_auc'] == pytest.approx(skm.auc(recall, precision))
  fpr, tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
  ours_fpr, ours_tpr = metrics.roc_curve(labels, scores)
  np.testing.assert_allclose(ours_fpr, fpr)
  np.testing.assert_allclose(ours_tpr, tpr)


def test_one_class_areas_are_undefined_not_invented():
  assert metrics.roc_auc(np.ones(4), np.linspace(0, 1, 4)) is None
  assert metrics.pr_auc(np.zeros(4), np.linspace(0, 1, 4)) is None


def test_self_contradiction_rate_hand_worked():
  primary = np.array([0.1, 0.2, 0.9, 0.3, 0.8])  # real, real, fake, real, fake
  head = np.array([0.9, 0.1, 0.9, 0.6, 0.2])     # claims 0, 2, 3
  cr = metrics.self_contradiction(primary, head)
  assert cr['count'] == 2                       # images 0 and 3
  assert cr['rate'] == pytest.approx(2 / 3)     # of the 3 the primary calls real
  assert cr['share_of_claims'] == pytest.approx(2 / 3)  # of the 3 claims


def test_multiclass_failed_attribution_counts_as_real_and_highest_claim_wins():
  heads = np.array([[0.9, 0.2, 0.6, 0.1],    # head for source 1
                    [0.7, 0.3, 0.8, 0.2]])   # head for source 3
  predicted = metrics.multiclass_predictions(heads, (1, 3))
  np.testing.assert_array_equal(predicted, [1, 0, 3, 0])
  matrix = metrics.confusion_matrix(np.array([1, 0, 3, 1]), predicted, (0, 1, 3))
  np.testing.assert_array_equal(matrix, [[1, 0, 0], [1, 1, 0], [0, 0, 1]])
  np.testing.assert_array_equal(
      matrix, skm.confusion_matrix([1, 0, 3, 1], predicted, labels=[0, 1, 3]))
