"""Metric functions against hand-worked cases and scikit-learn (a test-only comparison)."""
import numpy as np
import pytest
from sklearn import metrics as skm

from gta_jax.scoring import metrics
from gta_jax.scoring import verdicts

DEFAULT = verdicts.Thresholds()


def test_binary_metrics_hand_worked():
  labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
  scores = np.array([0.9, 0.5, 0.2, 0.7, 0.1, 0.49, 0.3, 0.8])
  # predicted (>= 0.5): 1 1 0 1 0 0 0 1 -> tp 3, fp 1, fn 1, tn 3
  m = metrics.binary_metrics(labels, scores)
  assert (m['tp'], m['fp'], m['fn'], m['tn']) == (3, 1, 1, 3)
  assert m['accuracy'] == 0.75 and m['precision'] == 0.75 and m['recall'] == 0.75
  assert m['f1'] == pytest.approx(0.75)
  # F1 claiming at >= each score, highest first: 0.9 2/5, 0.8 4/6, 0.7 4/7, 0.5 6/8, 0.49 6/9,
  # 0.3 6/10, 0.2 8/11, 0.1 8/12 -> the best is 0.75, at 0.5.
  assert m['best_f1'] == pytest.approx(0.75) and m['best_f1_threshold'] == 0.5


def test_best_f1_is_the_best_of_every_threshold_and_is_never_below_f1():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 300)
  scores = np.round(rng.uniform(0, 1, 300) * 0.7 + labels * 0.2, 2)  # ties on purpose
  m = metrics.binary_metrics(labels, scores)
  brute = max(skm.f1_score(labels, scores >= t) for t in np.unique(scores))
  assert m['best_f1'] == pytest.approx(brute)
  assert skm.f1_score(labels, scores >= m['best_f1_threshold']) == pytest.approx(brute)
  assert m['best_f1'] >= m['f1']
  assert metrics.best_f1(np.zeros(4), np.linspace(0, 1, 4)) == {'best_f1': None,
                                                                'best_f1_threshold': None}


@pytest.mark.parametrize('seed', range(5))
def test_the_hand_counted_metrics_match_scikit_learn(seed):
  """Precision, recall and F1 at the threshold are counted here (the curves and areas are
  scikit-learn's own); the counts agree with scikit-learn's, ties included."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, 200)
  scores = np.round(rng.uniform(0, 1, 200) * 0.6 + labels * 0.3, 2)  # ties on purpose
  m = metrics.binary_metrics(labels, scores)
  predicted = scores >= 0.5
  assert m['precision'] == pytest.approx(skm.precision_score(labels, predicted))
  assert m['recall'] == pytest.approx(skm.recall_score(labels, predicted))
  assert m['f1'] == pytest.approx(skm.f1_score(labels, predicted))


def test_areas_of_a_hand_worked_ranking():
  """Scores 0.9 0.8 0.7 0.7 0.2, labels 1 0 1 0 0: of the 2 x 3 (positive, negative) pairs the
  positives win 4 and tie 1 -> ROC-AUC 4.5 / 6."""
  labels, scores = np.array([1, 0, 1, 0, 0]), np.array([0.9, 0.8, 0.7, 0.7, 0.2])
  assert metrics.roc_auc(labels, scores) == pytest.approx(4.5 / 6)
  fpr, tpr = metrics.roc_curve(labels, scores)
  np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 2 / 3, 1])
  np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
  precision, recall = metrics.pr_curve(labels, scores)
  np.testing.assert_allclose(precision[::-1], [1, 1, 0.5, 0.5, 0.4])  # from the top threshold
  np.testing.assert_allclose(recall[::-1], [0, 0.5, 0.5, 1, 1])


def test_one_class_areas_are_undefined_not_invented():
  assert metrics.roc_auc(np.ones(4), np.linspace(0, 1, 4)) is None
  assert metrics.pr_auc(np.zeros(4), np.linspace(0, 1, 4)) is None


def test_self_contradiction_rate_and_share_of_claims_are_not_interchangeable():
  primary = np.array([0.1, 0.2, 0.9, 0.3, 0.8, 0.4])  # real, real, fake, real, fake, real
  head = np.array([0.9, 0.1, 0.9, 0.6, 0.2, 0.3])     # claims 0, 2, 3
  cr = metrics.self_contradiction(~verdicts.called_fake(primary, DEFAULT),
                                  verdicts.claims(head[None], DEFAULT)[0])
  assert cr['count'] == 2                       # images 0 and 3
  assert cr['rate'] == pytest.approx(2 / 4)     # of the 4 the primary calls real
  assert cr['share_of_claims'] == pytest.approx(2 / 3)  # of the head's 3 claims


def test_failed_and_multiple_attributions_hand_worked():
  called_fake = np.array([1, 1, 1, 1, 0, 0], bool)
  claimed = np.array([[1, 0, 1, 0, 0, 1],
                      [0, 0, 1, 0, 0, 1]], bool)
  # Called fake and claimed by no head: images 1 and 3 (image 4 is unclaimed but called real;
  # the true labels play no part, as in the paper's footnote 8).
  assert metrics.failed_attributions(called_fake, claimed) == 2
  assert metrics.multiple_attributions(claimed) == 2  # images 2 and 5


def test_multiclass_on_a_partial_head_set_has_an_other_class_in_accuracy_and_matrix():
  source_id = np.array([0, 1, 3, 5, 1, 6])    # sources 5 and 6 have no head
  predicted = np.array([0, 1, 1, 0, 0, 3])
  truth, classes = metrics.multiclass_truth(source_id, (0, 1, 3))
  assert classes == (0, 1, 3, metrics.OTHER)
  np.testing.assert_array_equal(truth, [0, 1, 3, -1, 1, -1])
  accuracy = metrics.multiclass_accuracy(truth, predicted)
  matrix = metrics.confusion_matrix(truth, predicted, classes)
  assert accuracy == pytest.approx(2 / 6) == pytest.approx(np.trace(matrix) / matrix.sum())
  assert matrix[3].tolist() == [1, 0, 1, 0]  # the 'other' row: called real, called source 3
  full, all_classes = metrics.multiclass_truth(source_id, (0, 1, 3, 5, 6))
  assert all_classes == (0, 1, 3, 5, 6) and metrics.OTHER not in full


def test_external_accuracy_of_the_primary_and_of_a_head_point_opposite_ways():
  # External images are all fake: the primary should call them fake, a head should not claim them.
  called_fake = np.array([True, True, True, False])
  claimed = np.array([True, False, False, False])
  assert metrics.external_accuracy_detection(called_fake) == pytest.approx(0.75)
  assert metrics.external_accuracy_head(claimed) == pytest.approx(0.75)
  assert metrics.external_accuracy_detection(claimed) == pytest.approx(0.25)
  assert metrics.recall_on_source(np.array([1, 0, 1, 1], bool), np.array([2, 2, 2, 3]), 2) == \
      pytest.approx(2 / 3)


def test_summarize_uses_the_verdict_rule_for_heads_and_argmax_for_softmax():
  scores = {'p_fake': np.array([0.9, 0.8, 0.2, 0.7]),
            'p_heads': np.array([[0.9, 0.2, 0.6, 0.1], [0.7, 0.3, 0.8, 0.2]]),
            'label': np.array([1, 1, 0, 1]), 'source_id': np.array([1, 3, 0, 3])}
  heads = metrics.summarize(scores, metrics.Outputs(True, ('a', 'b'), (1, 3), 'claims', True),
                            DEFAULT)
  assert list(heads) == ['heads', 'detection', 'multiclass']
  # predicted sources: 1, 0 (no claim), 3, 0 -> correct: image 0 only
  assert heads['multiclass']['accuracy'] == pytest.approx(1 / 4)
  assert heads['multiclass']['failed_attributions'] == 2  # images 1 and 3: called fake, unclaimed
  assert heads['heads']['b']['self_contradiction']['count'] == 1  # image 2
  # Image 2 is the only one called real, and a head claims it: the aggregate rate is 1.
  assert heads['multiclass']['self_contradiction'] == {'rate': 1.0, 'share_of_claims': 0.5,
                                                       'count': 1}
  softmax = metrics.summarize(scores, metrics.Outputs(True, ('a', 'b'), (1, 3), 'argmax'), DEFAULT)
  # classes real (1 - p_fake), a, b: argmax -> 1, 3, real (a tie goes to the first), real
  assert softmax['multiclass']['accuracy'] == pytest.approx(3 / 4)
  assert 'self_contradiction' not in softmax['heads']['a']
  one_vs_rest = metrics.summarize(scores, metrics.Outputs(False, ('a',), (1,)), DEFAULT)
  assert set(one_vs_rest) == {'heads'}


def test_multiclass_failed_attribution_counts_as_real_and_highest_claim_wins():
  heads = np.array([[0.9, 0.2, 0.6, 0.1],    # head for source 1
                    [0.7, 0.3, 0.8, 0.2]])   # head for source 3
  predicted = verdicts.attributed_source(heads, (1, 3), DEFAULT)
  np.testing.assert_array_equal(predicted, [1, 0, 3, 0])
  matrix = metrics.confusion_matrix(np.array([1, 0, 3, 1]), predicted, (0, 1, 3))
  np.testing.assert_array_equal(matrix, [[1, 0, 0], [1, 1, 0], [0, 0, 1]])
  np.testing.assert_array_equal(
      matrix, skm.confusion_matrix([1, 0, 3, 1], predicted, labels=[0, 1, 3]))


def test_by_perturbation_splits_a_test_set_by_what_touched_each_image():
  bits = {'blur': 0, 'jpeg': 2}
  # Six images: head 'a' (source 1) finds its own on the unblurred ones only; image 4 was blurred
  # and JPEG-compressed, image 5 JPEG-compressed.
  scores = {'p_fake': np.array([0.9, 0.1, 0.9, 0.2, 0.4, 0.8]),
            'p_heads': np.array([[0.9, 0.1, 0.2, 0.6, 0.3, 0.7]]),
            'label': np.array([1, 0, 1, 0, 1, 1]), 'source_id': np.array([1, 0, 1, 0, 1, 1]),
            'perturbations': np.array([0, 0, 1, 1, 5, 4])}
  outputs = metrics.Outputs(True, ('a',), (1,), 'claims')
  touched = lambda applied: {kind: (applied >> bits[kind] & 1).astype(bool)
                             for kind in ('blur', 'jpeg')}
  split = metrics.by_perturbation(scores, outputs, DEFAULT, touched(scores['perturbations']))
  assert list(split) == ['none', 'with_blur', 'without_blur', 'with_jpeg', 'without_jpeg']
  assert [split[k]['images'] for k in split] == [2, 3, 3, 2, 4]
  # none: images 0, 1 -> head claims 0 (right), not 1 -> F1 1; detector right on both.
  assert split['none']['heads']['a']['f1'] == 1.0 and split['none']['detection']['accuracy'] == 1
  # with_blur: images 2, 3, 4 -> claims image 3 (a real), misses 2 and 4 -> F1 0.
  assert split['with_blur']['heads']['a']['f1'] == 0.0
  # Its ranking there is wrong too: both positives score below the negative.
  assert split['with_blur']['heads']['a']['roc_auc'] == pytest.approx(0.0)
  # without_blur: images 0, 1, 5 -> claims 0 and 5, both its own -> F1 1.
  assert split['without_blur']['heads']['a']['f1'] == 1.0
  # with_jpeg: images 4, 5 -> claims 5 only: precision 1, recall 1/2 -> F1 2/3.
  assert split['with_jpeg']['heads']['a']['f1'] == pytest.approx(2 / 3)
  assert set(split['none']) == {'images', 'detection', 'heads', 'multiclass'}
  assert set(split['none']['heads']['a']) == set(metrics.SUBSET_FIGURES['heads'])
  # A one-kind test set: its unperturbed images are 'without_<kind>'; a kind nothing touched
  # is reported as such, without figures.
  only_jpeg = metrics.by_perturbation(scores, outputs, DEFAULT,
                                      {'jpeg': touched(np.zeros(6, int))['jpeg']})
  assert only_jpeg == {'with_jpeg': {'images': 0},
                       'without_jpeg': only_jpeg['without_jpeg']}
  assert only_jpeg['without_jpeg']['images'] == 6


def test_grouped_rate_interval_resamples_whole_groups():
  # Two photos of 8 crops, one with none called fake and one with all: a resample of two photos
  # pools to 0, 1/2 or 1 (p 1/4, 1/2, 1/4), so the 95% interval spans 0..1 -- over crops it
  # would look like a tight 0.5.
  assert metrics.grouped_rate_interval([0, 8], [8, 8]) == (0.0, 1.0)
  # Photos that agree leave no spread, whatever their sizes.
  assert metrics.grouped_rate_interval([1, 2, 4], [10, 20, 40]) == pytest.approx((0.1, 0.1))
  # More photos of the same mix: a narrower interval around the pooled rate.
  few = metrics.grouped_rate_interval([0, 0, 0, 4], [16] * 4)
  many = metrics.grouped_rate_interval([0, 0, 0, 4] * 8, [16] * 32)
  assert few[0] <= 1 / 16 <= few[1] and many[0] <= 1 / 16 <= many[1]
  assert many[1] - many[0] < few[1] - few[0]
  assert metrics.grouped_rate_interval([0, 0, 0, 4], [16] * 4) == few  # seeded: reproducible
  assert metrics.grouped_rate_interval([3], [16]) is None  # one photo: no spread to measure
  with pytest.raises(ValueError, match='one count per group'):
    metrics.grouped_rate_interval([1, 2], [3])
