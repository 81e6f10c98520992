"""Unknown generators: open-set scores, calibrated per-head thresholds, and the protocols to judge them.

A fake that no head claims is the paper's "failed attribution". Whether such an image comes from a
generator no head knows is an open-set question, answered from the head logits z [K, N] by a
score (higher = more like a known source):
  max_probability  max_k sigmoid(z_k)
  max_logit        max_k z_k
  energy           logsumexp_k z_k (the negative free energy of Liu et al. 2020 over the heads)
  doc              max_k (sigmoid(z_k) - t_k) with DOC thresholds t_k
  mahalanobis      minus the smallest squared Mahalanobis distance of the pooled features (the
                   primary's mid features and every head's final features) to a known source's
                   mean, one shared covariance, fitted on the run's training images (Lee et al.
                   2018); computed by this command, not stored
  knn              minus the distance of the L2-normalised pooled features to their k-th nearest
                   neighbour (k = 10) among the known sources' training images (Sun et al. 2022,
                   "deep nearest neighbours": no class means, no covariance)
and by calibrations fitted on the validation split as stored (no training-only widening), stored
in the model bundle (`model.json: open_set`):
  tpr95  t_k = the probability at which head k claims 95% of its own source's images
  doc    t_k = max(0.5, 1 - 3 sigma_k), sigma_k the spread of head k's probabilities on its own
         source mirrored about 1 (Shu et al. 2017, DOC)
  knn    the kNN bank (KNN_BANK_FILE: the known sources' training features, L2-normalised) and
         the score 99% of the known validation fakes reach (KNN_ACCEPTANCE; `--fit
         --knn-acceptance A` moves it), with the scores at KNN_OPERATING_POINTS beside it
`attribute --open-set tpr95|doc` then says `unknown` where the primary says fake and no head
reaches its calibrated threshold; `--open-set knn` (its default when the bundle has it) where no
head claims it at 0.5 or its kNN score is under the threshold. A calibration that keeps a share
a of the known fakes costs about 1 - a of closed-set accuracy, whatever the score: tpr95 and the
kNN's 95% point cost ~0.05, which is why attribute's default keeps 99%.

Protocols (fakes only: which generator made a fake, given that it is one), each reported as AUROC
(known vs unknown), OSCR, TNR at TPR 95%, closed-set accuracy (known fakes attributed to their
source, at 0.5 and under each calibration as attribute applies it) and, per calibration, the
share of unknown fakes attribute would call `unknown` (for the kNN calibration at each operating
point too: closed_set_accuracy_knn0.95, unknown_flagged_knn0.95, ...):
  unseen_architecture  test fakes of dataset sources the run has no head for (leave-one-out runs)
  unseen_seed          the cross-seed split: known architectures, generators trained from another
                       seed; reported both ways, as known (DNA-Det's view: the architecture is the
                       class) and as unknown (POSE's view: the trained model is the class)
  unseen_dataset       the external split (another generator and data); pixel models only
  unseen_variant_architecture  (--variants) the generator-variant data's unseen architectures
                       (cubic and lanczos3 upsamplers on the built-in data): no fold retraining
A workdir holding several heads runs (e.g. configs/openset_synthetic.py's leave-one-out folds) is
reported per run and as mean and spread over them.

Each run's figures go to RUN/results/openset.json, a folder's to FOLDER/openset.json (and OUT
with --json), laid out as {protocol: {"auroc", "oscr", "tnr_at_tpr95", "closed_set_accuracy",
"closed_set_accuracy_tpr95", "closed_set_accuracy_doc", "by_score": {score: {...}},
"claimed_most_by", ...}}; over several runs each figure is the mean, with "spread" ({"mean",
"std", "n"} of every figure) and "runs" (each run's own) beside it.
"""
import pathlib
from typing import NamedTuple

import numpy as np
from scipy import special

from gta_jax import errors
from gta_jax.io import checkpoints
from gta_jax.models import networks
from gta_jax.scoring import metrics
from gta_jax.scoring import verdicts

SCORES = ('max_probability', 'max_logit', 'energy', 'doc', 'mahalanobis', 'knn')
FEATURE_SCORES = ('mahalanobis', 'knn')  # from pooled features, computed by the command
VARIANT_ARCHITECTURES = 'test_unseen_architectures'  # the built-in `variants` data's split
DOC_ALPHA = 3.0
CALIBRATION_TPR = 0.95
KNN_K = 10
# The kNN calibration's share of known validation fakes that pass it: the point attribute uses.
# A calibration rejects about (1 - acceptance) of the known fakes it meets, and the issue's
# budget for that is 0.02 of closed-set accuracy; 0.99 keeps the cost inside it with room for the
# sampling error of a point fitted on a few hundred validation images (about +- 0.005 at 600).
KNN_ACCEPTANCE = 0.99
# The acceptances every protocol also reports the kNN calibration at (the trade-off between known
# fakes kept and unknown ones flagged); their thresholds are stored beside the one attribute uses.
KNN_OPERATING_POINTS = (0.95, 0.98, 0.99)
KNN_BANK_FILE = 'open_set_knn_bank.npy'  # in the model bundle, beside model.json
FITTING_SPLITS = ('train', 'validation')  # read from the data the heads were trained on


def open_set_scores(head_logits: np.ndarray, doc_thresholds=None) -> dict:
  """[K, N] head logits -> {score name: [N]}, higher = more like a known source."""
  z = np.asarray(head_logits, np.float64)
  p = special.expit(z)
  scores = {'max_probability': p.max(axis=0), 'max_logit': z.max(axis=0),
            'energy': special.logsumexp(z, axis=0)}
  if doc_thresholds is not None:
    scores['doc'] = (p - np.asarray(doc_thresholds, np.float64)[:, None]).max(axis=0)
  return scores


def tpr_threshold(positive_probabilities: np.ndarray, tpr: float = CALIBRATION_TPR,
                  midpoint: bool = False) -> float:
  """The highest threshold at which a head claims `tpr` of its own source's images (score >= t).

  midpoint: halfway between that score and the next lower one instead, which passes the same
  images but leaves the last one a margin against float rounding when it is scored again (the
  kNN score, recomputed by `attribute` in another batch)."""
  ranked = np.sort(np.asarray(positive_probabilities, np.float64))[::-1]
  index = int(np.ceil(tpr * len(ranked))) - 1
  if midpoint and index + 1 < len(ranked):
    return float((ranked[index] + ranked[index + 1]) / 2)
  return float(ranked[index])


def doc_threshold(positive_probabilities: np.ndarray, alpha: float = DOC_ALPHA) -> float:
  """DOC: the positives' probabilities mirrored about 1 give a spread sigma; t = max(0.5, 1 - a s)."""
  p = np.asarray(positive_probabilities, np.float64)
  mirrored = np.concatenate([p, 2.0 - p])
  sigma = float(np.sqrt(np.mean((mirrored - 1.0) ** 2)))
  return max(0.5, 1.0 - alpha * sigma)


def calibrate(head_logits: np.ndarray, source_id: np.ndarray, head_ids) -> dict:
  """Validation logits of every image -> {'tpr95': [K], 'doc': [K]} per-head thresholds."""
  p = special.expit(head_logits)
  fitted = {'tpr95': [], 'doc': []}
  for k, head_id in enumerate(head_ids):
    own = p[k, np.asarray(source_id) == head_id]
    if own.size == 0:
      raise errors.ConfigError(f'no validation images of source id {head_id} to calibrate head {k}.')
    fitted['tpr95'].append(tpr_threshold(own))
    fitted['doc'].append(doc_threshold(own))
  return fitted


def closed_set_accuracy(p_heads: np.ndarray, source_id: np.ndarray, head_ids,
                        thresholds: verdicts.Thresholds, accepted=None) -> float | None:
  """Known fakes attributed to their own source by the verdict rule (an unclaimed one is wrong;
  so is one an open-set score does not accept, `accepted` [N] bool, as attribute calls it
  unknown)."""
  if len(source_id) == 0:
    return None
  correct = verdicts.attributed_source(p_heads, head_ids, thresholds) == np.asarray(source_id)
  return float(np.mean(correct if accepted is None else correct & accepted))


def evaluate_protocol(known_logits, known_source, unknown_logits, head_ids, fitted: dict,
                      score: str, extra_scores=None) -> dict:
  """Known fakes (logits [K, Nk], true source ids) vs unknown fakes (logits [K, Nu]) -> metrics.

  The top-level metrics use `score`; `by_score` holds every score's AUROC, OSCR and TNR.
  extra_scores: {name: ([Nk] known, [Nu] unknown)} scores computed elsewhere (Mahalanobis).
  """
  head_ids = np.asarray(head_ids)
  logits = np.concatenate([known_logits, unknown_logits], axis=1)
  known = np.r_[np.ones(known_logits.shape[1], bool), np.zeros(unknown_logits.shape[1], bool)]
  # The closed-set decision each score's acceptance is judged with: the most probable head.
  correct = np.r_[head_ids[np.argmax(known_logits, axis=0)] == known_source,
                  np.zeros(unknown_logits.shape[1], bool)]
  by_score = {}
  all_scores = open_set_scores(logits, fitted.get('doc'))
  for name, (on_known, on_unknown) in (extra_scores or {}).items():
    all_scores[name] = np.r_[on_known, on_unknown]
  for name, values in all_scores.items():
    by_score[name] = {'auroc': metrics.roc_auc(known, values),
                      'oscr': metrics.oscr(known, correct, values),
                      'tnr_at_tpr95': metrics.tnr_at_tpr(known, values, 0.95)}
  known_p, unknown_p = special.expit(known_logits), special.expit(unknown_logits)
  result = dict(by_score[score])
  result['closed_set_accuracy'] = closed_set_accuracy(known_p, known_source, head_ids,
                                                      verdicts.Thresholds())
  result['closed_set_accuracy_argmax'] = float(np.mean(correct[known])) if known.any() else None
  # Each calibration as `attribute --open-set METHOD` applies it: known fakes still attributed to
  # their source, and the share of unknown fakes it calls `unknown`. The kNN calibration also at
  # its other stored acceptances (suffix `knn0.95`, ...): what a refit there would cost and flag.
  applied = {method: (verdicts.Thresholds(heads=tuple(fitted[method])), np.ones(len(known), bool))
             for method in ('tpr95', 'doc') if method in fitted}
  if 'knn' in fitted and 'knn' in all_scores:  # heads at 0.5; under the kNN threshold is unknown too
    knn = fitted['knn']
    for name, threshold in [('knn', knn['threshold'])] + [
        (f'knn{point}', t) for point, t in knn.get('operating_points', {}).items()]:
      applied[name] = (verdicts.Thresholds(), all_scores['knn'] >= threshold)
  for name, (thresholds, passes) in applied.items():
    result[f'closed_set_accuracy_{name}'] = closed_set_accuracy(
        known_p, known_source, head_ids, thresholds, passes[known])
    flagged = ~verdicts.claims(unknown_p, thresholds).any(axis=0) | ~passes[~known]
    result[f'unknown_flagged_{name}'] = float(np.mean(flagged)) if flagged.size else None
  result['known'], result['unknown'] = int(known.sum()), int((~known).sum())
  result['score'] = score
  result['by_score'] = by_score
  return result


def most_claiming_head(logits: np.ndarray, head_names, thresholds: verdicts.Thresholds) -> dict:
  """For an unknown source's images: the head that claims most of them, and the share."""
  claimed = verdicts.claims(special.expit(logits), thresholds)
  counts = claimed.sum(axis=1)
  k = int(np.argmax(counts))
  return {'head': head_names[k] if counts[k] else None,
          'share': float(counts[k] / max(claimed.shape[1], 1)),
          'claimed_by_none': float(np.mean(~claimed.any(axis=0)))}


class Mahalanobis:
  """Lee et al. (2018)'s score on pooled features: class means of the known sources and one shared
  covariance, fitted on the run's clean training images; score = -(smallest squared distance)."""

  def __init__(self, features: np.ndarray, source_id: np.ndarray, head_ids):
    features = np.asarray(features, np.float64)
    self.means = np.stack([features[source_id == h].mean(axis=0) for h in head_ids])
    centered = np.concatenate([features[source_id == h] - self.means[k]
                               for k, h in enumerate(head_ids)])
    covariance = centered.T @ centered / len(centered)
    ridge = 1e-6 * np.trace(covariance) / len(covariance)
    self.precision = np.linalg.inv(covariance + ridge * np.eye(len(covariance)))

  def __call__(self, features: np.ndarray) -> np.ndarray:
    diffs = np.asarray(features, np.float64)[None] - self.means[:, None]
    return -np.einsum('knd,de,kne->kn', diffs, self.precision, diffs).min(axis=0)


class NearestNeighbours:
  """Sun et al. (2022)'s score: -(distance to the k-th nearest known training feature), both sides
  L2-normalised, so it needs no class model and no covariance. k = 10 was fixed before any fold
  was scored (the paper's k = 50 is for 50,000 training images; ours have a few thousand).

  bank: the known sources' L2-normalised training features (`fit` makes it; a bundle stores it)."""

  def __init__(self, bank: np.ndarray, k: int = KNN_K, chunk: int = 1024):
    self.bank, self.k, self.chunk = np.asarray(bank, np.float64), k, chunk

  @classmethod
  def fit(cls, features: np.ndarray, source_id: np.ndarray, head_ids, k: int = KNN_K,
          chunk: int = 1024) -> 'NearestNeighbours':
    known = np.isin(source_id, np.asarray(head_ids))
    if known.sum() < k:
      raise errors.ConfigError(f'the kNN score needs at least k={k} known training images; '
                               f'the run has {int(known.sum())}.')
    return cls(_unit(np.asarray(features, np.float64)[known]), k, chunk)

  def __call__(self, features: np.ndarray) -> np.ndarray:
    query = _unit(np.asarray(features, np.float64))
    out = []
    for start in range(0, len(query), self.chunk):  # [chunk, bank] distances at a time
      squared = np.maximum(2.0 - 2.0 * query[start:start + self.chunk] @ self.bank.T, 0.0)
      out.append(-np.sqrt(np.partition(squared, self.k - 1, axis=1)[:, self.k - 1]))
    return np.concatenate(out) if out else np.zeros(0)


def _unit(features: np.ndarray) -> np.ndarray:
  return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def describe(fitted: dict, head_names) -> str:
  """One line of what `fit` stored, for the log of an export or a refit."""
  line = ('open-set thresholds fitted on validation: tpr95 '
          + ' '.join(f'{n}={t:.3f}' for n, t in zip(head_names, fitted['tpr95']))
          + '; doc ' + ' '.join(f'{t:.3f}' for t in fitted['doc']))
  if 'knn' in fitted:
    line += (f'; kNN score {fitted["knn"]["threshold"]:.3f} (keeps '
             f'{fitted["knn"]["acceptance"]:.0%} of known fakes)')
  return line


def knn_records(spec: checkpoints.ModelSpec) -> list[dict]:
  """The model's kNN calibrations, each naming the heads it was fitted with (its bank's columns:
  the primary's 16 mid features, then 32 per head in that order). A run's own bundle has one over
  all its heads (open_set.knn); a model composed of heads from several runs keeps each run's
  (open_set.knn_groups, gta_jax/io/composition.py)."""
  fitted = spec.open_set or {}
  if 'knn' in fitted:
    return [{**fitted['knn'], 'heads': list(spec.head_names)}]
  return [dict(g) for g in fitted.get('knn_groups', [])]


class KnnGroup(NamedTuple):
  heads: tuple[str, ...]       # the heads the calibration was fitted with, in its bank's order
  columns: np.ndarray          # their pooled-feature columns in the model's pooled features
  knn: 'NearestNeighbours'
  threshold: float
  acceptance: float


class GroupedKnn:
  """The kNN score of a model whose heads come from one or more runs: each run's calibration
  scores the pooled features it was fitted on (the primary's and its own heads'), and an image is
  known when any of them accepts it. Enrolling a run's heads adds its calibration and changes no
  other; a single run's model has one group, and this is its kNN score unchanged."""

  def __init__(self, groups: list[KnnGroup]):
    self.groups = groups

  def __call__(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[B, 16 + 32K] pooled features -> (scores [G, B], thresholds [G])."""
    scores = np.stack([g.knn(np.asarray(features)[:, g.columns]) for g in self.groups])
    return scores, np.array([g.threshold for g in self.groups])

  def describe(self) -> str:
    return '; '.join(
        f'kNN score (minus the distance to the {g.knn.k}th nearest known training image) is under '
        f'{g.threshold:.3f}, which {g.acceptance:.0%} of the known validation fakes reach'
        + (f' (heads {", ".join(g.heads)})' if len(self.groups) > 1 else '') for g in self.groups)


def load_knn_groups(spec: checkpoints.ModelSpec, banks: dict, where) -> GroupedKnn:
  """The model's kNN calibrations with their banks ({file name: array}, as the bundle(s) hold
  them); a clear error naming what is missing or does not fit."""
  records = knn_records(spec)
  if not records:
    raise errors.ConfigError(f'{where}: no kNN calibration in model.json; fit it with '
                             '`python -m gta_jax.openset --workdir RUN --fit`.')
  groups = []
  for record in records:
    missing = [h for h in record['heads'] if h not in spec.head_names]
    if missing:
      raise errors.ConfigError(f'{where}: a kNN calibration names heads {missing} the model lacks.')
    bank = banks.get(record['bank'])
    if bank is None:
      raise errors.ConfigError(f'{where}: the kNN bank {record["bank"]} is missing or unreadable; refit it with '
                               '`python -m gta_jax.openset --workdir RUN --fit`.')
    width = networks.pooled_feature_width(len(record['heads']))
    if bank.ndim != 2 or bank.shape[1] != width or len(bank) < record['k']:
      raise errors.ConfigError(f'{where}: the kNN bank {record["bank"]} has shape {bank.shape}; '
                               f'its heads\' pooled features have {width} values and k={record["k"]} '
                               'needs as many images.')
    columns = np.concatenate([np.arange(16)] + [
        16 + 32 * spec.head_names.index(h) + np.arange(32) for h in record['heads']])
    groups.append(KnnGroup(tuple(record['heads']), columns, NearestNeighbours(bank, record['k']),
                           float(record['threshold']), float(record.get('acceptance', 0.95))))
  return GroupedKnn(groups)


def read_knn_banks(bundle, spec: checkpoints.ModelSpec) -> dict:
  """{file name: bank} of every kNN calibration the bundle's model.json names (unreadable ones
  left out: load_knn_groups says which is missing when the kNN score is asked for)."""
  banks = {}
  for record in knn_records(spec):
    path = pathlib.Path(bundle) / record['bank']
    try:
      banks[record['bank']] = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
      continue
  return banks


def load_knn(bundle, spec: checkpoints.ModelSpec) -> tuple['NearestNeighbours', float]:
  """A run's own bundle: its one kNN score and threshold (load_knn_groups reads any model's)."""
  groups = load_knn_groups(spec, read_knn_banks(bundle, spec), bundle).groups
  if len(groups) != 1:
    raise errors.ConfigError(f'{bundle}: a composed model with {len(groups)} kNN calibrations; '
                             'score it with attribute, which reads them all.')
  return groups[0].knn, groups[0].threshold
