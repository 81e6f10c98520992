"""The paper's metrics from scores, thresholds at 0.5 (the release's `0 if p < 0.5 else 1`).

All functions take numpy arrays on the host; positive = fake (detection) or the head's source.
"""
import numpy as np

THRESHOLD = 0.5


def binary_metrics(labels: np.ndarray, scores: np.ndarray) -> dict:
  """accuracy, precision, recall, F1 (release definitions), ROC-AUC, plus counts."""
  labels = np.asarray(labels).astype(bool)
  predicted = np.asarray(scores) >= THRESHOLD
  tp = int(np.sum(predicted & labels))
  fp = int(np.sum(predicted & ~labels))
  fn = int(np.sum(~predicted & labels))
  tn = int(np.sum(~predicted & ~labels))
  precision = tp / (tp + fp) if tp + fp else 0.0
  recall = tp / (tp + fn) if tp + fn else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {'accuracy': (tp + tn) / max(len(labels), 1), 'precision': precision, 'recall': recall,
          'f1': f1, 'roc_auc': roc_auc(labels, scores), 'pr_auc': pr_auc(labels, scores),
          'count': int(len(labels)), 'tp': tp, 'fp': fp, 'fn': fn, 'tn': tn}


def _counts_by_threshold(labels: np.ndarray, scores: np.ndarray):
  """-> (true positives, false positives) at each distinct threshold, highest threshold first."""
  order = np.argsort(-np.asarray(scores, np.float64), kind='mergesort')
  sorted_scores, sorted_labels = np.asarray(scores, np.float64)[order], labels[order]
  last_of_each = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]
  tps = np.cumsum(sorted_labels)[last_of_each]
  return tps, (last_of_each + 1) - tps


def pr_curve(labels: np.ndarray, scores: np.ndarray):
  """-> (precision, recall) at every distinct threshold, lowest threshold first, ending at the
  (recall 0, precision 1) point, as scikit-learn's precision_recall_curve (1.9)."""
  labels = np.asarray(labels).astype(bool)
  tps, fps = _counts_by_threshold(labels, scores)
  precision = tps / (tps + fps)
  recall = tps / max(labels.sum(), 1)
  return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0]


def pr_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
  """Area under the precision-recall curve by the trapezoid rule (the release's
  `auc(recall, precision)`); None when there are no positives."""
  labels = np.asarray(labels).astype(bool)
  if not labels.any():
    return None
  precision, recall = pr_curve(labels, scores)
  return float(-np.trapezoid(precision, recall))


def roc_curve(labels: np.ndarray, scores: np.ndarray):
  """-> (false positive rate, true positive rate) from the highest threshold down."""
  labels = np.asarray(labels).astype(bool)
  tps, fps = _counts_by_threshold(labels, scores)
  return (np.r_[0.0, fps / max((~labels).sum(), 1)], np.r_[0.0, tps / max(labels.sum(), 1)])


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
  """Mann-Whitney U form of ROC-AUC (ties count half); None when one class is absent."""
  labels = np.asarray(labels).astype(bool)
  scores = np.asarray(scores, np.float64)
  n_pos, n_neg = labels.sum(), (~labels).sum()
  if n_pos == 0 or n_neg == 0:
    return None
  order = np.argsort(scores, kind='mergesort')
  ranks = np.empty(len(scores))
  sorted_scores = scores[order]
  # Average ranks over ties.
  boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
  starts = np.concatenate([[0], boundaries])
  ends = np.concatenate([boundaries, [len(scores)]])
  for start, end in zip(starts, ends):
    ranks[order[start:end]] = (start + end + 1) / 2
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def self_contradiction(primary_scores: np.ndarray, head_scores: np.ndarray) -> dict:
  """Among images the primary calls real, the share a head claims (the release's CR), and the
  share of the head's claims that the primary calls real."""
  called_real = np.asarray(primary_scores) < THRESHOLD
  claimed = np.asarray(head_scores) >= THRESHOLD
  both = int(np.sum(called_real & claimed))
  return {'rate': both / called_real.sum() if called_real.any() else 0.0,
          'share_of_claims': both / claimed.sum() if claimed.any() else 0.0,
          'count': both}


def multiclass_predictions(head_scores: np.ndarray, head_ids) -> np.ndarray:
  """[K, N] head scores -> [N] predicted source id: the highest claiming head, 0 (real) if none."""
  head_scores = np.asarray(head_scores)
  best = np.argmax(head_scores, axis=0)
  claimed = head_scores.max(axis=0) >= THRESHOLD
  return np.where(claimed, np.asarray(head_ids)[best], 0)


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, class_ids) -> np.ndarray:
  index = {c: i for i, c in enumerate(class_ids)}
  matrix = np.zeros((len(class_ids), len(class_ids)), np.int64)
  for t, p in zip(truth, predicted):
    if t in index and p in index:
      matrix[index[t], index[p]] += 1
  return matrix
