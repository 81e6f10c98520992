"""The paper's metrics from scores, on the host (numpy).

Positive = fake (detection) or the head's source. What counts as a claim is decided by
gta_jax/scoring/verdicts.py (thresholds from the config, 0.5 by default as the release's
`0 if p < 0.5 else 1`); the functions here only count.
"""
import dataclasses

import numpy as np
from sklearn import metrics as sklearn_metrics

from gta_jax.scoring import calibration as calibration_lib
from gta_jax.scoring import verdicts


def mean_and_spread(values) -> dict:
  """{'mean', 'std', 'n'} of repeated runs' figures (seeds, folds); std is the sample standard
  deviation (ddof=1), 0 for a single run."""
  array = np.asarray(values, np.float64)
  return {'mean': float(array.mean()), 'std': float(array.std(ddof=1)) if array.size > 1 else 0.0,
          'n': int(array.size)}


def grouped_rate_interval(hits, totals, level: float = 0.95, resamples: int = 2000,
                          seed: int = 0) -> tuple[float, float] | None:
  """Percentile bootstrap interval of a pooled rate sum(hits) / sum(totals) whose units come in
  groups (crops of one photo): whole groups are resampled, because crops of one photo fail or
  pass together, so the spread over photos, not over crops, says what another set of photos may
  give. -> (low, high), or None with fewer than two groups. Deterministic for a given seed."""
  hits, totals = np.asarray(hits, np.float64), np.asarray(totals, np.float64)
  if hits.shape != totals.shape or hits.ndim != 1:
    raise ValueError(f'hits {hits.shape} and totals {totals.shape} must be one count per group')
  if hits.size < 2:
    return None
  picks = np.random.default_rng(seed).integers(0, hits.size, (resamples, hits.size))
  pooled_totals = totals[picks].sum(axis=1)
  rates = hits[picks].sum(axis=1) / np.maximum(pooled_totals, 1)
  tail = (1 - level) / 2 * 100
  low, high = np.percentile(rates, [tail, 100 - tail])
  return float(low), float(high)


def binary_metrics(labels: np.ndarray, scores: np.ndarray,
                   threshold: float = verdicts.DEFAULT_THRESHOLD) -> dict:
  """accuracy, precision, recall, F1 (release definitions), ROC-AUC, PR-AUC, the best F1 over
  thresholds, plus counts."""
  labels = np.asarray(labels).astype(bool)
  predicted = np.asarray(scores) >= threshold
  tp = int(np.sum(predicted & labels))
  fp = int(np.sum(predicted & ~labels))
  fn = int(np.sum(~predicted & labels))
  tn = int(np.sum(~predicted & ~labels))
  precision = tp / (tp + fp) if tp + fp else 0.0
  recall = tp / (tp + fn) if tp + fn else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {'accuracy': (tp + tn) / max(len(labels), 1), 'precision': precision, 'recall': recall,
          'f1': f1, 'roc_auc': roc_auc(labels, scores), 'pr_auc': pr_auc(labels, scores),
          **best_f1(labels, scores),
          'count': int(len(labels)), 'tp': tp, 'fp': fp, 'fn': fn, 'tn': tn}


def _counts_by_threshold(labels: np.ndarray, scores: np.ndarray):
  """-> (true positives, false positives, thresholds) with each distinct score taken as the
  threshold (claims at >= it), highest first."""
  order = np.argsort(-np.asarray(scores, np.float64), kind='mergesort')
  sorted_scores, sorted_labels = np.asarray(scores, np.float64)[order], labels[order]
  last_of_each = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]
  tps = np.cumsum(sorted_labels)[last_of_each]
  return tps, (last_of_each + 1) - tps, sorted_scores[last_of_each]


def pr_curve(labels: np.ndarray, scores: np.ndarray):
  """-> (precision, recall) at every distinct threshold, lowest threshold first, ending at the
  (recall 0, precision 1) point (scikit-learn's precision_recall_curve)."""
  precision, recall, _ = sklearn_metrics.precision_recall_curve(
      np.asarray(labels).astype(bool), np.asarray(scores, np.float64))
  return precision, recall


def pr_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
  """Area under the precision-recall curve by the trapezoid rule (the release's
  `auc(recall, precision)`); None when there are no positives."""
  labels = np.asarray(labels).astype(bool)
  if not labels.any():
    return None
  precision, recall = pr_curve(labels, scores)
  return float(sklearn_metrics.auc(recall, precision))


def best_f1(labels: np.ndarray, scores: np.ndarray) -> dict:
  """{'best_f1', 'best_f1_threshold'}: the highest F1 any threshold reaches on these very scores,
  and that threshold (claims at p >= it). An oracle, read off the split it is measured on, so not
  an operating point: it says whether a low F1 is the threshold's fault (best_f1 far above f1) or
  the ranking's (best_f1 close to it). None for both when there are no positives."""
  labels = np.asarray(labels).astype(bool)
  if not labels.any():
    return {'best_f1': None, 'best_f1_threshold': None}
  tps, fps, thresholds = _counts_by_threshold(labels, scores)
  f1s = 2 * tps / (tps + fps + labels.sum())
  best = int(np.argmax(f1s))  # thresholds run from the highest down: ties keep the highest
  return {'best_f1': float(f1s[best]), 'best_f1_threshold': float(thresholds[best])}


def roc_curve(labels: np.ndarray, scores: np.ndarray):
  """-> (false positive rate, true positive rate) at every distinct threshold, from the highest
  down, starting at (0, 0) (scikit-learn's roc_curve, no point dropped)."""
  fpr, tpr, _ = sklearn_metrics.roc_curve(np.asarray(labels).astype(bool),
                                          np.asarray(scores, np.float64), drop_intermediate=False)
  return fpr, tpr


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
  """ROC-AUC (ties count half); None when one class is absent."""
  labels = np.asarray(labels).astype(bool)
  if labels.all() or not labels.any():
    return None
  return float(sklearn_metrics.roc_auc_score(labels, np.asarray(scores, np.float64)))


def tnr_at_tpr(known: np.ndarray, scores: np.ndarray, tpr: float = 0.95) -> float | None:
  """Open set: the share of unknown images rejected at the score threshold that accepts `tpr` of
  the known ones (higher score = more known; accepted when score >= threshold). None when either
  group is empty."""
  known = np.asarray(known, bool)
  scores = np.asarray(scores, np.float64)
  if not known.any() or known.all():
    return None
  known_scores = np.sort(scores[known])[::-1]
  # The highest threshold that accepts at least ceil(tpr * n) known images.
  threshold = known_scores[int(np.ceil(tpr * len(known_scores))) - 1]
  return float(np.mean(scores[~known] < threshold))


def oscr(known: np.ndarray, correct: np.ndarray, scores: np.ndarray) -> float | None:
  """Open-set classification rate (Dhamija et al. 2018; as POSE reports it): the area under the
  curve of correct-classification rate of known images (correct and accepted) against the
  false-positive rate of unknown ones (accepted), as the acceptance threshold on `scores` sweeps
  from high to low. known, correct: [N] bool (correct only matters for known images)."""
  known, correct = np.asarray(known, bool), np.asarray(correct, bool)
  scores = np.asarray(scores, np.float64)
  if not known.any() or known.all():
    return None
  order = np.argsort(-scores, kind='mergesort')
  sorted_scores = scores[order]
  last_of_each = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]
  ccr = np.r_[0.0, np.cumsum((known & correct)[order])[last_of_each] / known.sum()]
  fpr = np.r_[0.0, np.cumsum(~known[order])[last_of_each] / (~known).sum()]
  return float(np.trapezoid(ccr, fpr))


def self_contradiction(called_real: np.ndarray, claimed: np.ndarray) -> dict:
  """One head's self-contradiction. called_real, claimed: [N] bool (the primary says real; the
  head claims). rate: among images the primary calls real, the share the head claims (the
  release's CR); share_of_claims: among the head's claims, the share the primary calls real."""
  called_real, claimed = np.asarray(called_real, bool), np.asarray(claimed, bool)
  both = int(np.sum(called_real & claimed))
  return {'rate': both / called_real.sum() if called_real.any() else 0.0,
          'share_of_claims': both / claimed.sum() if claimed.any() else 0.0,
          'count': both}


def failed_attributions(called_fake: np.ndarray, claimed: np.ndarray) -> int:
  """Images the primary calls fake ([N] bool) that no head claims (claimed: [K, N] bool): the
  paper's failed attributions (its footnote 8), whatever their true source."""
  return int(np.sum(np.asarray(called_fake, bool) & ~np.asarray(claimed, bool).any(axis=0)))


def multiple_attributions(claimed: np.ndarray) -> int:
  """Images that more than one head claims (claimed: [K, N] bool)."""
  return int(np.sum(np.asarray(claimed, bool).sum(axis=0) > 1))


OTHER = -1  # multiclass class id of the fake sources no output stands for


def multiclass_truth(source_id: np.ndarray, class_ids) -> tuple[np.ndarray, tuple]:
  """True classes for a multiclass table: a source outside `class_ids` (no head for it) becomes
  OTHER, and OTHER joins the classes when it occurs, so that accuracy and the confusion matrix
  count the same images (accuracy == trace / total). No model predicts OTHER."""
  source_id = np.asarray(source_id)
  uncovered = ~np.isin(source_id, class_ids)
  classes = tuple(class_ids) + ((OTHER,) if uncovered.any() else ())
  return np.where(uncovered, OTHER, source_id), classes


def multiclass_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float:
  """Share of images whose predicted class is the true one (truth from `multiclass_truth`)."""
  return float(np.mean(np.asarray(predicted) == np.asarray(truth)))


def external_accuracy_detection(called_fake: np.ndarray) -> float:
  """External EXA of the primary: share of an unseen generator's images (all fake) called fake."""
  return float(np.mean(np.asarray(called_fake, bool)))


def external_accuracy_head(claimed: np.ndarray) -> float:
  """External EXA of a head: share of an unseen generator's images the head does *not* claim."""
  return float(np.mean(~np.asarray(claimed, bool)))


def recall_on_source(claimed: np.ndarray, source_id: np.ndarray, head_source: int) -> float:
  """Share of the images of `head_source` that the head claims (e.g. cross-seed recall)."""
  return float(np.mean(np.asarray(claimed, bool)[np.asarray(source_id) == head_source]))


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, class_ids) -> np.ndarray:
  index = {c: i for i, c in enumerate(class_ids)}
  matrix = np.zeros((len(class_ids), len(class_ids)), np.int64)
  for t, p in zip(truth, predicted):
    if t in index and p in index:
      matrix[index[t], index[p]] += 1
  return matrix


@dataclasses.dataclass(frozen=True)
class Outputs:
  """What a model outputs, so that `summarize` knows which metrics apply."""
  detection: bool                 # p_fake is a real-vs-fake score
  head_names: tuple[str, ...] = ()  # one row of p_heads each, positive = that source
  head_ids: tuple[int, ...] = ()
  multiclass: str | None = None   # 'claims' (heads, the verdict rule) | 'argmax' (softmax) | None
  self_contradiction: bool = False  # a primary and heads that can disagree
  any_input_size: bool = True     # False: only images of the training size can be scored
  # Temperatures and fixed-FPR thresholds fitted on validation (gta_jax/scoring/calibration.py);
  # None: calibration figures of the scores as they are only, operating points not measured.
  calibration: calibration_lib.Calibration | None = None

  @property
  def sigmoid_outputs(self) -> bool:
    """True: each output is a sigmoid (one-vs-rest), which temperature scaling applies to;
    False: marginals of a softmax, whose calibration is reported but not fitted."""
    return self.multiclass != 'argmax'

  def calibration_record(self, output: int) -> dict | None:
    """output 0: the detector; k + 1: head k."""
    return None if self.calibration is None else self.calibration.record(output)


def summarize(scores: dict, outputs: Outputs, thresholds: verdicts.Thresholds) -> dict:
  """Scores of one test set -> {'heads': {name: ...}, 'detection': ..., 'multiclass': ...}.

  scores: p_fake [N], p_heads [K, N], label [N], source_id [N] (host arrays).
  """
  result = {'heads': {}}
  if outputs.detection:
    result['detection'] = binary_metrics(scores['label'], scores['p_fake'], thresholds.fake)
    result['detection'] |= calibration_lib.output_figures(
        scores['label'] != 0, scores['p_fake'], outputs.calibration_record(0))
  head_thresholds = thresholds.for_heads(len(outputs.head_names))
  claimed = verdicts.claims(scores['p_heads'], thresholds)
  for k, name in enumerate(outputs.head_names):
    positives = scores['source_id'] == outputs.head_ids[k]
    head = binary_metrics(positives, scores['p_heads'][k], head_thresholds[k])
    head |= calibration_lib.output_figures(positives, scores['p_heads'][k],
                                           outputs.calibration_record(k + 1))
    if outputs.self_contradiction:
      head['self_contradiction'] = self_contradiction(
          ~verdicts.called_fake(scores['p_fake'], thresholds), claimed[k])
    result['heads'][name] = head
  if outputs.multiclass is None:
    return result
  truth, classes = multiclass_truth(scores['source_id'], (0,) + tuple(outputs.head_ids))
  if outputs.multiclass == 'argmax':
    probs = np.concatenate([1 - scores['p_fake'][None], scores['p_heads']])
    predicted = verdicts.most_probable_class(probs, (0,) + tuple(outputs.head_ids))
    result['multiclass'] = {'accuracy': multiclass_accuracy(truth, predicted)}
  else:  # 'claims': the verdict rule (the highest claiming head; no claim = real)
    predicted = verdicts.attributed_source(scores['p_heads'], outputs.head_ids, thresholds)
    called_fake = verdicts.called_fake(scores['p_fake'], thresholds)
    result['multiclass'] = {
        'accuracy': multiclass_accuracy(truth, predicted),
        'failed_attributions': failed_attributions(called_fake, claimed),
        'multiple_attributions': multiple_attributions(claimed),
        # The paper's self-contradiction: among images the primary calls real, the share that
        # at least one head claims.
        'self_contradiction': self_contradiction(~called_fake, claimed.any(axis=0))}
  result['multiclass'] |= {
      'classes': list(classes),
      'confusion_matrix': confusion_matrix(truth, predicted, classes).tolist()}
  return result


# The figures `by_perturbation` keeps for each subset (the full set stays in the mode's own entry).
SUBSET_FIGURES = {'detection': ('accuracy', 'f1', 'roc_auc'), 'heads': ('f1', 'best_f1', 'roc_auc'),
                  'multiclass': ('accuracy',)}


def by_perturbation(scores: dict, outputs: Outputs, thresholds: verdicts.Thresholds,
                    touched: dict[str, np.ndarray]) -> dict:
  """The test set's figures on the images each perturbation touched and on those it spared.

  A perturbed test set mixes images that still carry a generator's trace with images a
  perturbation stripped of it (a blur takes nearly all of an x2 upsampler's trace), and one
  figure over all of them cannot say which. scores: as `summarize`; touched: for each kind the
  test set can apply, [N] bool, whether it was applied to each image (augment.touched).
  -> {'none': ..., 'with_<kind>': ..., 'without_<kind>': ...} (no 'none' for a one-kind set,
  where it is 'without_<kind>'), each {'images': n, and SUBSET_FIGURES of `summarize`}.
  """
  subsets = {} if len(touched) == 1 else {'none': ~np.any(list(touched.values()), axis=0)}
  for kind, mask in touched.items():
    subsets[f'with_{kind}'], subsets[f'without_{kind}'] = mask, ~mask
  result = {}
  for name, chosen in subsets.items():
    subset = {'images': int(chosen.sum())}
    if chosen.any():
      full = summarize({key: value[..., chosen] for key, value in scores.items()}, outputs,
                       thresholds)
      if 'detection' in full:
        subset['detection'] = {k: full['detection'][k] for k in SUBSET_FIGURES['detection']}
      subset['heads'] = {head: {k: figures[k] for k in SUBSET_FIGURES['heads']}
                         for head, figures in full['heads'].items()}
      if 'multiclass' in full:
        subset['multiclass'] = {k: full['multiclass'][k] for k in SUBSET_FIGURES['multiclass']}
    result[name] = subset
  return result
