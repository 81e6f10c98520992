"""Unknown generators: open-set scores, calibrated per-head thresholds, and the protocols to judge them.

python -m gta_jax.openset --workdir RUN [--fit] [--score max_logit] [--json OUT]

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
import argparse
import copy
import dataclasses
import functools
import json
import pathlib
import sys

import jax
import numpy as np
from scipy import special

from gta_jax import checkpoints
from gta_jax import data
from gta_jax import distributed
from gta_jax import errors
from gta_jax import metrics
from gta_jax import models
from gta_jax import run_records
from gta_jax import verdicts
from gta_jax.families import base
from gta_jax.writers import log

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


# ------------------------------------------------------------------------------------- scores


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


# ---------------------------------------------------------------------------------- evaluation


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


# ------------------------------------------------------------------------------- model and data


@functools.partial(jax.jit, static_argnames=('input_kind', 'num_heads', 'frequency_inputs'))
def _head_outputs(variables, constants, images, *, input_kind: str, num_heads: int,
                  frequency_inputs: tuple[str, ...] = ()):
  """-> (head logits [K, B], pooled features [B, 16 + 32K]: models.pooled_features)."""
  x = base.preprocess(images, input_kind, constants)
  out = models.predict(variables, x, input_kind=input_kind, num_heads=num_heads,
                       frequency_inputs=frequency_inputs)
  return out.heads.logit, models.pooled_features(out)


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


@dataclasses.dataclass
class HeadsRun:
  """A finished heads run: its bundle, dataset, and the head ids in the dataset.

  `dataset` gives the test splits; the training and validation splits (the fit, the kNN bank,
  the Mahalanobis statistics) always come from `trained_on`, the data the heads were trained
  on: a run on `multiseed` scored on the `variants` splits still fits on its own images."""
  workdir: pathlib.Path
  spec: checkpoints.ModelSpec
  variables: dict
  dataset: data.Dataset
  head_ids: tuple[int, ...]
  batch_size: int
  trained_on: data.Dataset
  # outputs() per split: `openset --fit` reads the training split for the fit and again for the
  # protocols' feature scores; the weights do not change between them.
  _outputs: dict = dataclasses.field(default_factory=dict, repr=False)

  @classmethod
  def open(cls, workdir, data_dir=None, variants: bool = False) -> 'HeadsRun':
    """variants: read the dataset's generator-variant counterpart (the same images plus the
    variant splits; the built-in data's `variants` config, built on first use)."""
    workdir = pathlib.Path(workdir)
    bundle = workdir / 'model'
    if not checkpoints.is_model_bundle(bundle):
      raise errors.MissingRunError(f'{workdir} holds no finished run (no model/model.json).')
    spec, variables, _ = checkpoints.load_model_bundle(bundle)
    if spec.arch != 'proposed' or not spec.head_names:
      raise errors.ConfigError(f'{workdir} is not a heads run (phase III/IV): open-set scores '
                               'come from attribution heads.')
    config = run_records.load_run_config(workdir)
    if data_dir:
      config.data.data_dir = data_dir
    trained_on = dataset = data.open_dataset(config.data, spec.input_kind)
    if variants:
      from gta_jax import crosstest  # local: crosstest imports train, which openset does not need
      test_data = copy.deepcopy(config.data)
      test_data.config = crosstest.variants_config(config.data.name, config.data.config)
      if test_data.config != config.data.config:
        dataset = data.open_dataset(test_data, spec.input_kind)
    head_ids = tuple(dataset.source_id(name) for name in spec.head_names)
    distributed.check_batch_size(config.eval.batch_size, 'eval.batch_size')
    return cls(workdir, spec, variables, dataset, head_ids, config.eval.batch_size, trained_on)

  def outputs(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (head logits [K, N], pooled features [N, D], source ids [N]) over every image of a
    split (clean)."""
    if split not in self._outputs:
      self._outputs[split] = self._compute_outputs(split)
    return self._outputs[split]

  def _compute_outputs(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    constants = distributed.replicate({'dct_mean': self.trained_on.dct_stats[0],
                                       'dct_std': self.trained_on.dct_stats[1]})
    variables = distributed.replicate(self.variables)
    logits, features, sources = [], [], []
    source = self.trained_on if split in FITTING_SPLITS else self.dataset
    # As stored: no training-only widening (jitter, softened reals), so that the thresholds and
    # the kNN bank describe images as attribute will meet them, as the test splits are.
    for batch in source.batches(split, self.batch_size, seed=0, as_trained=False):
      z, f = distributed.to_host(_head_outputs(variables, constants, data.to_device(batch['image']),
                                               input_kind=self.spec.input_kind,
                                               num_heads=len(self.spec.head_names),
                                               frequency_inputs=self.spec.head_frequency_inputs))
      batch = distributed.gather_rows(batch)
      logits.append(np.asarray(z)[:, batch['mask']])
      features.append(np.asarray(f)[batch['mask']])
      sources.append(batch['source_id'][batch['mask']])
    return np.concatenate(logits, axis=1), np.concatenate(features), np.concatenate(sources)

  def logits(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """-> (head logits [K, N], source ids [N])."""
    logits, _, sources = self.outputs(split)
    return logits, sources


def fit(run: HeadsRun, knn_acceptance: float = KNN_ACCEPTANCE) -> dict:
  """Fits the thresholds on the validation split and stores them in the run's model bundle:
  per-head tpr95 and DOC thresholds, and the kNN score's bank (the known sources' training
  features, KNN_BANK_FILE) with the score `knn_acceptance` of the known validation fakes reach
  (`threshold`, what attribute uses) and the scores at KNN_OPERATING_POINTS (`operating_points`,
  what the protocols also report)."""
  if not 0.5 <= knn_acceptance < 1:
    raise errors.ConfigError(f'kNN acceptance {knn_acceptance}: the share of known fakes the '
                             'calibration keeps, in [0.5, 1).')
  _, train_features, train_sources = run.outputs('train')
  logits, features, sources = run.outputs('validation')
  fitted = calibrate(logits, sources, run.head_ids)
  bundle = run.workdir / 'model'
  known_training = int(np.isin(train_sources, run.head_ids).sum())
  if known_training >= KNN_K:
    bank = NearestNeighbours.fit(train_features, train_sources, run.head_ids).bank.astype(np.float32)
    knn = NearestNeighbours(bank)  # the bank as stored, so attribute agrees
    known = np.isin(sources, run.head_ids)
    known_scores = knn(features[known])
    fitted['knn'] = {'k': knn.k, 'acceptance': knn_acceptance,
                     'threshold': tpr_threshold(known_scores, knn_acceptance, midpoint=True),
                     'operating_points': {f'{a:g}': tpr_threshold(known_scores, a, midpoint=True)
                                          for a in KNN_OPERATING_POINTS},
                     'bank': KNN_BANK_FILE, 'images': int(len(bank))}
    if distributed.is_main_process():
      np.save(bundle / KNN_BANK_FILE, bank)
  else:
    log(f'{run.workdir}: no kNN calibration: {known_training} training images of the heads\' '
        f'sources, fewer than k={KNN_K}.')
  record = {**fitted, 'split': 'validation', 'mode': 'clean', 'tpr': CALIBRATION_TPR,
            'doc_alpha': DOC_ALPHA}
  checkpoints.update_model_spec(bundle, open_set=record)
  run.spec = dataclasses.replace(run.spec, open_set=record)
  return record


def describe(fitted: dict, head_names) -> str:
  """One line of what `fit` stored, for the log of an export or a refit."""
  line = ('open-set thresholds fitted on validation: tpr95 '
          + ' '.join(f'{n}={t:.3f}' for n, t in zip(head_names, fitted['tpr95']))
          + '; doc ' + ' '.join(f'{t:.3f}' for t in fitted['doc']))
  if 'knn' in fitted:
    line += (f'; kNN score {fitted["knn"]["threshold"]:.3f} (keeps '
             f'{fitted["knn"]["acceptance"]:.0%} of known fakes)')
  return line


def load_knn(bundle, spec: checkpoints.ModelSpec) -> tuple['NearestNeighbours', float]:
  """The bundle's fitted kNN score and its threshold; a clear error naming what is missing."""
  record = (spec.open_set or {}).get('knn')
  if not record:
    raise errors.ConfigError(f'{bundle}: no kNN calibration in model.json; fit it with '
                             '`python -m gta_jax.openset --workdir RUN --fit`.')
  path = pathlib.Path(bundle) / record['bank']
  try:
    bank = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise errors.ConfigError(f'{path}: cannot read the kNN bank ({e}); refit it with '
                             '`python -m gta_jax.openset --workdir RUN --fit`.') from None
  width = models.pooled_feature_width(len(spec.head_names))
  if bank.ndim != 2 or bank.shape[1] != width or len(bank) < record['k']:
    raise errors.ConfigError(f'{path}: a bank of shape {bank.shape}; this model\'s pooled features '
                             f'have {width} values and k={record["k"]} needs as many images.')
  return NearestNeighbours(bank, record['k']), float(record['threshold'])


def protocols(run: HeadsRun, score: str) -> dict:
  """Every protocol the run's data allows -> {protocol: metrics}."""
  fitted = run.spec.open_set or {}
  names = list(run.spec.head_names)
  calibrated = verdicts.Thresholds(heads=tuple(fitted['tpr95'])) if 'tpr95' in fitted else (
      verdicts.Thresholds())
  _, train_features, train_sources = run.outputs('train')
  # kNN from the bundle's stored bank when fitted (what attribute scores with), else fresh.
  knn = (load_knn(run.workdir / 'model', run.spec)[0] if 'knn' in fitted
         else NearestNeighbours.fit(train_features, train_sources, run.head_ids))
  feature_scorers = (Mahalanobis(train_features, train_sources, run.head_ids), knn)

  def feature_scores(features):  # every feature score of `features`: [len(FEATURE_SCORES), N]
    return np.stack([scorer(features) for scorer in feature_scorers])

  logits, features, sources = run.outputs('test')
  feature_score = feature_scores(features)
  is_known = np.isin(sources, run.head_ids)
  known_logits, known_source = logits[:, is_known], sources[is_known]

  def protocol(known, known_ids, unknown):
    """known, unknown: (logits, feature scores [len(FEATURE_SCORES), N]) of each group."""
    return evaluate_protocol(known[0], known_ids, unknown[0], run.head_ids, fitted, score,
                             {name: (known[1][i], unknown[1][i])
                              for i, name in enumerate(FEATURE_SCORES)})

  known = (known_logits, feature_score[:, is_known])
  result = {}
  unseen = (sources != 0) & ~is_known
  if unseen.any():
    entry = protocol(known, known_source, (logits[:, unseen], feature_score[:, unseen]))
    by_source = {}
    for source_id in np.unique(sources[unseen]):
      name = next(n for n, i in run.dataset.source_ids.items() if i == source_id)
      by_source[name] = most_claiming_head(logits[:, sources == source_id], names, calibrated)
    entry['claimed_most_by'] = by_source
    result['unseen_architecture'] = entry
  if run.dataset.has_split('test_cross_seed'):
    seed_logits, seed_features, seed_sources = run.outputs('test_cross_seed')
    seed_feature_scores = feature_scores(seed_features)
    covered = np.isin(seed_sources, run.head_ids)
    result['unseen_seed_as_unknown'] = protocol(
        known, known_source, (seed_logits[:, covered], seed_feature_scores[:, covered]))
    # DNA-Det's view: same architecture = same class. Unknown are then only the architectures
    # without a head, if the run left one out.
    seed_unseen = ~covered & (seed_sources != 0)
    unknown = (np.concatenate([logits[:, unseen], seed_logits[:, seed_unseen]], axis=1),
               np.concatenate([feature_score[:, unseen], seed_feature_scores[:, seed_unseen]],
                              axis=1))
    if unknown[0].shape[1]:
      result['unseen_seed_as_known'] = protocol(
          (np.concatenate([known_logits, seed_logits[:, covered]], axis=1),
           np.concatenate([feature_score[:, is_known], seed_feature_scores[:, covered]],
                          axis=1)),
          np.r_[known_source, seed_sources[covered]], unknown)
  if run.dataset.has_split(VARIANT_ARCHITECTURES):  # generators of architectures no head knows
    variant_logits, variant_features, variant_sources = run.outputs(VARIANT_ARCHITECTURES)
    entry = protocol(known, known_source, (variant_logits, feature_scores(variant_features)))
    entry['claimed_most_by'] = {
        next(n for n, i in run.dataset.source_ids.items() if i == source_id):
        most_claiming_head(variant_logits[:, variant_sources == source_id], names, calibrated)
        for source_id in np.unique(variant_sources)}
    result['unseen_variant_architecture'] = entry
  if run.dataset.has_split('test_external') and run.spec.input_kind == 'pixel':
    external_logits, external_features, _ = run.outputs('test_external')
    entry = protocol(known, known_source, (external_logits, feature_scores(external_features)))
    entry['claimed_most_by'] = {'external': most_claiming_head(external_logits, names, calibrated)}
    result['unseen_dataset'] = entry
  return result


def heads_runs_under(workdir: pathlib.Path) -> list[pathlib.Path]:
  """The run itself, or the heads runs one level below it (a chain of folds)."""
  if checkpoints.is_model_bundle(workdir / 'model'):
    return [workdir]
  return sorted(p for p in workdir.iterdir()
                if p.is_dir() and checkpoints.is_model_bundle(p / 'model')) if workdir.is_dir() else []


def aggregate(per_run: dict) -> dict:
  """{run: {protocol: metrics}} -> {protocol: {metric: {'mean', 'std', 'n'}}} over runs, by_score's
  figures included (by_score: {score: {metric: {...}}}); std is metrics.mean_and_spread's sample
  standard deviation, as gta_jax.sweep reports seeds. Non-numeric fields are left out."""

  def collect(entries: list[dict]) -> dict:
    figures: dict = {}
    for entry in entries:
      for key, value in entry.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
          figures.setdefault(key, []).append(float(value))
    out = {key: metrics.mean_and_spread(values) for key, values in figures.items()}
    by_score = [entry['by_score'] for entry in entries if 'by_score' in entry]
    if by_score:
      out['by_score'] = {score: collect([b[score] for b in by_score if score in b])
                         for score in dict.fromkeys(s for b in by_score for s in b)}
    return out

  protocols_seen = dict.fromkeys(p for results in per_run.values() for p in results)
  return {protocol: collect([results[protocol] for results in per_run.values()
                             if protocol in results]) for protocol in protocols_seen}


def summary(per_run: dict) -> dict:
  """What --json writes and a folder's results/openset.json holds: {protocol: metrics}, the
  issue's layout, for one run or several. For several runs each figure is the mean over the
  runs that have the protocol, `spread` holds {'mean', 'std', 'n'} of every figure (by_score's
  too) and `runs` each run's own metrics, so json[protocol]['auroc'] reads the same either way."""
  if len(per_run) == 1:
    return next(iter(per_run.values()))

  def means(spread: dict) -> dict:
    return {key: (means(value) if 'mean' not in value else value['mean'])
            for key, value in spread.items()}

  out = {}
  for protocol, spread in aggregate(per_run).items():
    entry = {key: value['mean'] for key, value in spread.items() if key != 'by_score'}
    entry['by_score'] = means(spread.get('by_score', {}))
    entry['spread'] = spread
    entry['runs'] = {run: results[protocol] for run, results in per_run.items()
                     if protocol in results}
    entry['score'] = next(iter(entry['runs'].values())).get('score')
    out[protocol] = entry
  return out


def format_table(results: dict) -> str:
  columns = {'auroc': 'AUROC', 'oscr': 'OSCR', 'tnr_at_tpr95': 'TNR at TPR 95%',
             'closed_set_accuracy': 'closed-set acc. at 0.5',
             'closed_set_accuracy_knn': 'closed-set acc. kNN', 'unknown_flagged_knn': 'unknowns kNN'}
  width = max([24] + [len(p) + 2 for p in results])
  lines = [f'{"protocol":<{width}}' + ''.join(f'{c:>24}' for c in columns.values())]
  for protocol, entry in results.items():
    cells = []
    for column in columns:
      value = entry.get(column)
      if isinstance(value, dict):
        cells.append(f'{value["mean"]:.3f} +- {value["std"]:.3f} (n={value["n"]})')
      else:
        cells.append('-' if value is None else f'{value:.3f}')
    lines.append(f'{protocol:<{width}}' + ''.join(f'{c:>24}' for c in cells))
  return '\n'.join(lines)


def _write_json(path: pathlib.Path, results: dict) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(results, indent=2, allow_nan=False) + '\n')
  log(f'wrote {path}')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m gta_jax.openset',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True,
                      help='a heads run (phase III/IV), or a folder of heads runs (folds)')
  parser.add_argument('--score', choices=SCORES, default='max_logit',
                      help='the score of the top-level figures (every score is in by_score)')
  parser.add_argument('--fit', action='store_true',
                      help='(re)fit the thresholds on the validation split and store them')
  parser.add_argument('--knn-acceptance', type=float,
                      help=f'with --fit: the share of known validation fakes the kNN calibration '
                           f'keeps (default {KNN_ACCEPTANCE}: it costs about 0.01-0.02 of '
                           f'closed-set accuracy; lower flags more unknowns, as the protocols\' '
                           f'closed_set_accuracy_knnA / unknown_flagged_knnA show)')
  parser.add_argument('--data-dir', help='where the run\'s dataset is prepared, if moved')
  parser.add_argument('--variants', action='store_true',
                      help='also score the unseen architectures of the dataset\'s generator-'
                           'variant counterpart (protocol unseen_variant_architecture; the '
                           'built-in data builds it on first use, ~11 min)')
  parser.add_argument('--json', help='also write {protocol: metrics} here (for several runs: '
                                     'means, with spread and runs; see summary)')
  args = parser.parse_args(argv)
  workdir = pathlib.Path(args.workdir)
  try:
    if args.knn_acceptance is not None and not args.fit:
      raise errors.ConfigError('--knn-acceptance sets where the kNN calibration is fitted: add '
                               '--fit.')
    knn_acceptance = KNN_ACCEPTANCE if args.knn_acceptance is None else args.knn_acceptance
    runs = heads_runs_under(workdir)
    if not runs:
      raise errors.MissingRunError(f'{workdir} holds no finished heads run (no model/model.json '
                                   'there or one level below).')
    per_run = {}
    for run_dir in runs:
      run = HeadsRun.open(run_dir, args.data_dir, args.variants)
      if args.fit or not run.spec.open_set:
        log(f'{run_dir}: {describe(fit(run, knn_acceptance), run.spec.head_names)}')
      if args.score == 'doc' and 'doc' not in (run.spec.open_set or {}):
        raise errors.ConfigError(f'{run_dir}: no DOC thresholds; run with --fit.')
      per_run[str(run_dir)] = protocols(run, args.score)
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for run_dir, results in per_run.items():
    print(f'\n{run_dir} (score: {args.score})')
    print(format_table(results) if results else '  no unknown images in this run\'s data')
    _write_json(pathlib.Path(run_dir) / 'results' / 'openset.json', results)
  output = summary(per_run)
  if len(per_run) > 1:
    print(f'\nmean and spread over {len(per_run)} runs (score: {args.score})')
    print(format_table(aggregate(per_run)))
  if runs != [workdir]:  # a folder of runs (folds) keeps its summary too
    _write_json(workdir / 'openset.json', output)
  if args.json:
    _write_json(pathlib.Path(args.json), output)
  return 0


if __name__ == '__main__':
  sys.exit(main())
