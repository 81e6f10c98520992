"""Open-set scores, thresholds and metrics: hand-worked cases and scikit-learn."""
import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn import metrics as sk

from gta_jax import errors
from gta_jax.evaluators import open_set
from gta_jax.scoring import inference
from gta_jax.scoring import metrics
from gta_jax.scoring import openset as openset_scores
from gta_jax.scoring import openset_fit
from gta_jax.scoring import verdicts
from gta_jax.tools import openset as openset_tool


def test_oscr_on_a_hand_worked_case():
  # Known: 0.9 (correct), 0.8 (wrong), 0.6 (correct); unknown: 0.7, 0.5. Sweeping down, CCR
  # steps to 1/3 at 0.9, FPR to 1/2 at 0.7, CCR to 2/3 at 0.6, FPR to 1 at 0.5: area
  # 1/2 * 1/3 + 1/2 * 2/3 = 0.5.
  known = np.array([1, 1, 1, 0, 0], bool)
  correct = np.array([1, 0, 1, 0, 0], bool)
  scores = np.array([0.9, 0.8, 0.6, 0.7, 0.5])
  assert metrics.oscr(known, correct, scores) == pytest.approx(0.5)
  # All correct makes OSCR the ROC-AUC of known vs unknown.
  assert metrics.oscr(known, np.ones(5, bool), scores) == pytest.approx(
      sk.roc_auc_score(known, scores))
  assert metrics.oscr(np.ones(3, bool), np.ones(3, bool), scores[:3]) is None


def test_tnr_at_tpr95_on_a_hand_worked_case_and_against_scikit_learn():
  known = np.r_[np.ones(20, bool), np.zeros(3, bool)]
  scores = np.r_[np.arange(1, 21, dtype=float), [1.5, 2.0, 3.0]]
  # 19 of 20 known accepted at threshold 2: unknown 1.5 rejected, 2.0 and 3.0 accepted.
  assert metrics.tnr_at_tpr(known, scores) == pytest.approx(1 / 3)
  rng = np.random.default_rng(0)
  for _ in range(20):
    known = rng.random(300) < 0.6
    scores = np.round(rng.normal(known * 1.0, 1.0), 1)  # with ties
    fpr, tpr, _ = sk.roc_curve(known, scores, drop_intermediate=False)
    expected = 1 - fpr[np.argmax(tpr >= 0.95)]
    assert metrics.tnr_at_tpr(known, scores) == pytest.approx(expected)
    assert metrics.roc_auc(known, scores) == pytest.approx(sk.roc_auc_score(known, scores))


def test_scores_and_thresholds():
  z = np.array([[2.0, -1.0, 0.3], [0.5, -3.0, 0.3]])
  scores = openset_scores.open_set_scores(z, doc_thresholds=[0.9, 0.6])
  np.testing.assert_allclose(scores['energy'], logsumexp(z, axis=0))
  np.testing.assert_allclose(scores['max_logit'], [2.0, -1.0, 0.3])
  p = 1 / (1 + np.exp(-z))
  np.testing.assert_allclose(scores['max_probability'], p.max(axis=0))
  np.testing.assert_allclose(scores['doc'], np.maximum(p[0] - 0.9, p[1] - 0.6))
  # DOC: [1.0, 0.9, 0.8] mirrored about 1 has sigma sqrt(0.1 / 6); t = 1 - 3 sigma.
  assert openset_scores.doc_threshold([1.0, 0.9, 0.8]) == pytest.approx(1 - 3 * np.sqrt(0.1 / 6))
  assert openset_scores.doc_threshold([0.9, 0.1, 0.5]) == 0.5  # a wide spread: never below 0.5
  assert openset_scores.tpr_threshold(np.linspace(0.05, 1.0, 20)) == pytest.approx(0.10)
  assert openset_scores.tpr_threshold(np.linspace(0.05, 1.0, 20), midpoint=True) == pytest.approx(0.075)
  assert openset_scores.tpr_threshold([-0.3, -0.1], tpr=1.0, midpoint=True) == pytest.approx(-0.3)
  fitted = openset_scores.calibrate(np.log(np.array([[9.0, 1.0, 3.0], [1.0, 1.0, 1.0]])),
                             np.array([1, 2, 1]), (1, 2))
  assert fitted['tpr95'] == pytest.approx([0.75, 0.5])  # head 1 on its own images: 0.9 and 0.75


def test_unknown_is_a_fake_no_calibrated_head_claims():
  t = verdicts.Thresholds(0.5, (0.8, 0.6))
  assert verdicts.verdict(0.9, {'a': 0.7, 'b': 0.5}, t, open_set=True) == 'unknown'
  assert verdicts.verdict(0.9, {'a': 0.7, 'b': 0.5}, t) == 'fake'
  assert verdicts.verdict(0.9, {'a': 0.85, 'b': 0.5}, t, open_set=True) == 'attributed:a'
  assert verdicts.verdict(0.2, {'a': 0.7, 'b': 0.5}, t, open_set=True) == 'real'
  # A fake the kNN score puts away from every known source is unknown whatever the heads claim;
  # a real image stays real and a contradiction stays one.
  half = verdicts.Thresholds()
  assert verdicts.verdict(0.9, {'a': 0.85, 'b': 0.2}, half, open_set=True, known=False) == 'unknown'
  assert verdicts.verdict(0.9, {'a': 0.85, 'b': 0.2}, half, open_set=True, known=True) == 'attributed:a'
  assert verdicts.verdict(0.2, {'a': 0.1, 'b': 0.2}, half, open_set=True, known=False) == 'real'
  assert verdicts.verdict(0.2, {'a': 0.9, 'b': 0.2}, half, open_set=True,
                          known=False) == 'contradiction:a'


def test_each_calibration_counts_what_attribute_would_say_on_a_hand_worked_case():
  # 2 heads (sources 1, 2); 4 known fakes, 2 unknown ones; logits chosen by hand.
  known_logits = np.array([[3.0, 1.0, -2.0, -2.0],    # head 1: claims images 0, 1 at 0.5
                           [-2.0, -2.0, 2.0, -1.0]])  # head 2: claims image 2; image 3 unclaimed
  known_source = np.array([1, 1, 2, 2])
  unknown_logits = np.array([[0.5, -3.0], [-3.0, -3.0]])  # image 0 claimed by head 1 at 0.5
  fitted = {'tpr95': [0.9, 0.5],  # p(1.0) = 0.73 < 0.9
            'knn': {'threshold': -0.5, 'operating_points': {'0.95': -0.15, '0.99': -0.8}}}
  knn = (np.array([-0.1, -0.2, -0.7, -0.1]), np.array([-0.3, -0.9]))  # known 2, unknown 1 fail
  result = openset_scores.evaluate_protocol(known_logits, known_source, unknown_logits, (1, 2), fitted,
                                     'max_logit', {'knn': knn})
  assert result['closed_set_accuracy'] == pytest.approx(3 / 4)        # image 3 unclaimed
  assert result['closed_set_accuracy_tpr95'] == pytest.approx(2 / 4)  # image 1 lost at 0.9
  assert result['unknown_flagged_tpr95'] == pytest.approx(2 / 2)      # p(0.5) = 0.62 < 0.9
  assert result['closed_set_accuracy_knn'] == pytest.approx(2 / 4)    # image 2 fails kNN, 3 unclaimed
  assert result['unknown_flagged_knn'] == pytest.approx(1 / 2)        # unknown 0 claimed and passes
  # The kNN calibration's other operating points, the heads at 0.5 as before: at -0.8 every
  # known passes (only the unclaimed image 3 is lost), at -0.15 images 1 and 2 fail too, and
  # unknown 0 (-0.3) with them.
  assert result['closed_set_accuracy_knn0.99'] == pytest.approx(3 / 4)
  assert result['unknown_flagged_knn0.99'] == pytest.approx(1 / 2)
  assert result['closed_set_accuracy_knn0.95'] == pytest.approx(1 / 4)
  assert result['unknown_flagged_knn0.95'] == pytest.approx(2 / 2)
  assert 'closed_set_accuracy_doc' not in result


def test_a_bundle_refuses_a_malformed_knn_calibration(tmp_path):
  from gta_jax.io import checkpoints
  record = checkpoints.ModelSpec(
      'pixel', 32, ('a',), primary_digest='0' * 64, task='attribution',
      open_set={'knn': {'k': 10, 'threshold': -0.4, 'bank': 'open_set_knn_bank.npy'}}).to_json()
  spec = checkpoints.ModelSpec.from_json(record, tmp_path / 'model.json')
  assert spec.open_set['knn']['k'] == 10
  good = {'k': 10, 'threshold': -0.4, 'bank': 'b.npy', 'acceptance': 0.99,
          'operating_points': {'0.95': -0.3, '0.99': -0.4}}
  assert checkpoints.ModelSpec.from_json({**record, 'open_set': {'knn': good}},
                                         tmp_path / 'model.json').open_set['knn'] == good
  for bad in ({'k': 0, 'threshold': -0.4, 'bank': 'b.npy'},
              {'k': 10, 'threshold': 0.3, 'bank': 'b.npy'},
              {'k': 10, 'threshold': -0.4, 'bank': '../b.npy'}, [1, 2],
              {**good, 'acceptance': 1.0}, {**good, 'acceptance': '0.99'},
              {**good, 'operating_points': {'0.95': 0.2}}, {**good, 'operating_points': [-0.3]}):
    with pytest.raises(Exception, match='open_set.knn'):
      checkpoints.ModelSpec.from_json({**record, 'open_set': {'knn': bad}}, tmp_path / 'model.json')


def test_a_protocol_separates_what_it_should_and_counts_closed_set_accuracy():
  rng = np.random.default_rng(1)
  head_ids = (1, 2)
  known_source = np.repeat([1, 2], 50)
  known_logits = rng.normal(-3, 1, (2, 100))
  known_logits[0, :50] += 6  # head 1 fires on source 1, head 2 on source 2
  known_logits[1, 50:] += 6
  unknown_logits = rng.normal(-3, 1, (2, 40))
  fitted = openset_scores.calibrate(known_logits, known_source, head_ids)
  result = openset_scores.evaluate_protocol(known_logits, known_source, unknown_logits, head_ids,
                                     fitted, 'max_logit')
  assert result['auroc'] > 0.95 and result['oscr'] > 0.9 and result['tnr_at_tpr95'] > 0.8
  assert result['known'] == 100 and result['unknown'] == 40
  assert result['closed_set_accuracy_argmax'] == pytest.approx(1.0)
  # Swapping the unknown and known roles turns AUROC around.
  swapped = openset_scores.evaluate_protocol(unknown_logits, np.full(40, 1), known_logits, head_ids,
                                      fitted, 'max_logit')
  assert swapped['auroc'] < 0.05


def test_mahalanobis_score_is_minus_the_nearest_squared_distance_under_the_shared_covariance():
  rng = np.random.default_rng(2)
  features = np.r_[rng.normal(0, 1, (200, 3)), rng.normal(0, 1, (200, 3)) + [5, 0, 0]]
  source = np.repeat([1, 2], 200)
  score = openset_scores.Mahalanobis(features, source, (1, 2))
  means = np.stack([features[:200].mean(0), features[200:].mean(0)])
  centered = np.r_[features[:200] - means[0], features[200:] - means[1]]
  precision = np.linalg.inv(centered.T @ centered / 400)
  query = np.array([[0.1, 0.2, -0.3], [5.2, 0.0, 0.1], [2.5, 9.0, 0.0]])
  expected = -np.min([[(q - m) @ precision @ (q - m) for m in means] for q in query], axis=1)
  np.testing.assert_allclose(score(query), expected, rtol=1e-4)
  assert score(query)[2] < score(query)[0]  # far from both known sources: less known


def test_folds_aggregate_to_mean_and_sample_std_over_runs():
  per_run = {'a': {'unseen_architecture': {'auroc': 0.8, 'oscr': 0.7, 'note': 'x',
                                           'by_score': {'knn': {'auroc': 0.9}}}},
             'b': {'unseen_architecture': {'auroc': 0.9, 'oscr': None,
                                           'by_score': {'knn': {'auroc': 0.7}}},
                   'unseen_dataset': {'auroc': 1.0}}}
  summary = open_set.aggregate(per_run)['unseen_architecture']
  assert summary['auroc']['mean'] == pytest.approx(0.85) and summary['auroc']['n'] == 2
  assert summary['auroc']['std'] == pytest.approx(np.std([0.8, 0.9], ddof=1))
  assert summary['oscr'] == {'mean': 0.7, 'std': 0.0, 'n': 1} and 'note' not in summary
  assert summary['by_score']['knn']['auroc']['mean'] == pytest.approx(0.8)
  assert summary['by_score']['knn']['auroc']['std'] == pytest.approx(np.std([0.9, 0.7], ddof=1))
  # What --json writes: {protocol: metrics} for one run or several, the layout.
  assert open_set.summary({'a': per_run['a']}) == per_run['a']
  written = open_set.summary(per_run)
  assert set(written) == {'unseen_architecture', 'unseen_dataset'}
  entry = written['unseen_architecture']
  assert entry['auroc'] == pytest.approx(0.85) and entry['by_score']['knn']['auroc'] == pytest.approx(0.8)
  assert entry['spread']['auroc'] == summary['auroc'] and set(entry['runs']) == {'a', 'b'}
  assert written['unseen_dataset']['auroc'] == 1.0 and set(written['unseen_dataset']['runs']) == {'b'}


def test_knn_score_is_minus_the_kth_neighbour_distance_of_unit_features_as_scikit_learn_finds():
  from sklearn.neighbors import NearestNeighbors
  rng = np.random.default_rng(3)
  features = rng.normal(0, 1, (300, 5)) * [1, 2, 3, 1, 1]
  source = np.repeat([0, 1, 2], 100)  # source 0 (real) is not a known source
  score = openset_scores.NearestNeighbours.fit(features, source, (1, 2), k=10, chunk=7)
  bank = features[100:] / np.linalg.norm(features[100:], axis=1, keepdims=True)
  query = rng.normal(0, 1, (20, 5))
  unit = query / np.linalg.norm(query, axis=1, keepdims=True)
  distances, _ = NearestNeighbors(n_neighbors=10).fit(bank).kneighbors(unit)
  np.testing.assert_allclose(score(query), -distances[:, 9], rtol=1e-6, atol=1e-9)
  # The scale of a feature vector does not matter; its direction does.
  np.testing.assert_allclose(score(3.0 * query), score(query), atol=1e-9)
  inside = bank[:1] * 5.0  # a known training feature itself: closer than a random direction
  assert score(inside)[0] > np.median(score(query))
  with pytest.raises(Exception, match='k=10'):
    openset_scores.NearestNeighbours.fit(features[:105], source[:105], (1,), k=10)


def test_attribute_defaults_to_the_knn_calibration_then_tpr95_then_none(tmp_path):
  from gta_jax.io import checkpoints

  def model(open_set, heads=('a',)):
    spec = checkpoints.ModelSpec('pixel', 32, heads, primary_digest='0' * 64, task='attribution',
                                 open_set=open_set)
    return inference.LoadedModel(spec, {}, banks={'bank.npy': bank}, origin=str(tmp_path))

  bank = np.eye(12, 16 + 32, dtype=np.float32)
  knn = {'k': 10, 'threshold': -0.4, 'bank': 'bank.npy', 'acceptance': 0.99}
  chosen = model({'tpr95': [0.6], 'doc': [0.55], 'knn': knn})
  chosen.use_open_set('auto')
  [group] = chosen.knn.groups
  assert chosen.open_set == 'knn' and group.knn.k == 10 and group.threshold == -0.4
  assert chosen.thresholds.for_heads(1) == pytest.approx([0.5])  # heads claim at 0.5 under knn
  fallback = model({'tpr95': [0.6], 'doc': [0.55]})  # fitted before kNN, or too few images
  fallback.use_open_set('auto')
  assert fallback.open_set == 'tpr95' and fallback.thresholds.for_heads(1) == pytest.approx([0.6])
  for unfitted in (model({}), model({'knn': knn}, heads=())):
    unfitted.use_open_set('auto')
    assert unfitted.open_set is None
  with pytest.raises(errors.UsageError, match='no knn calibration'):
    model({'tpr95': [0.6]}).use_open_set('knn')


def test_knn_acceptance_is_checked_and_only_taken_with_fit(tmp_path, capsys):
  assert openset_tool.main(['--workdir', str(tmp_path), '--knn-acceptance', '0.95']) == 2
  assert 'add --fit' in capsys.readouterr().err
  for bad in (1.0, 0.3):
    with pytest.raises(Exception, match='kNN acceptance'):
      openset_fit.fit(None, bad)  # refused before any image is read
