"""Whether a score can be read as a probability, and operating points fixed before the test set.

Per output (the detector, each head; positive = fake or the head's source), on the host:
- ECE with equal-mass bins: the scores sorted and cut into CALIBRATION_BINS groups of (nearly)
  equal size, ECE = sum over bins of (bin size / N) * |mean label - mean score|. Equal-width bins
  leave most bins empty for a confident detector (nearly every score sits near 0 or 1) and make
  the figure depend on a few images in the middle; equal mass gives every bin the same weight of
  evidence (Nixon et al. 2019, "Measuring calibration in deep learning", adaptive ECE).
- NLL: the mean binary cross-entropy of the score against the label; Brier: the mean squared
  difference. Scores are float32 sigmoids: 1 - p cannot be smaller than 2**-24 near 1, so every
  score is clipped to [2**-24, 1 - 2**-24] (PROBABILITY_FLOOR) before a log or a logit: an image
  called fake with p = 1.0 in float32 and real by its label costs log(2**24) = 16.6 nats, not
  infinity.
- TPR at a fixed false-positive rate (AT_FPR: 1% and 5%): the threshold is chosen on the
  validation split (the lowest score threshold at which at most that share of the validation
  negatives is claimed) and applied to the test set, where the realised TPR *and* FPR are
  reported: the FPR on test says whether the operating point held. A threshold read off the test
  set itself (metrics.best_f1) is an oracle, not an operating point.
- Temperature scaling (Guo et al. 2017): one scalar T per output, fitted on the validation split
  by minimising NLL of sigmoid(logit(p) / T); it changes no ranking and no verdict at the 0.5
  threshold, only how confident the reported probabilities are.

An output's calibration record (what a model bundle stores, gta_jax/io/checkpoints.ModelSpec):
{'temperature': T or None, 'fpr_thresholds': {'0.01': t, '0.05': t}, 'validation': {'nll':
before, 'nll_calibrated': after, 'images': n, 'positives': n}, 'fit': {'split', 'mode', 'seed',
'images', 'digest'}}, where 'digest' is the sha256 of the labels and scores the fit read; each
record carries its own 'fit', so a head keeps its run's when heads of several runs are composed.
A model's: {'detection': record or None, 'heads': [record or None per head]}.
"""
import dataclasses
import hashlib

import numpy as np
from scipy import optimize

PROBABILITY_FLOOR = 2.0 ** -24
CALIBRATION_BINS = 15
AT_FPR = (0.01, 0.05)
# The fitted temperature is searched in [1/20, 20] (log-uniformly): wider is a model whose scores
# say nothing (T -> inf) or a fit on a split it separates perfectly (T -> 0).
TEMPERATURE_RANGE = (0.05, 20.0)


def clipped(p) -> np.ndarray:
  return np.clip(np.asarray(p, np.float64), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)


def logit(p) -> np.ndarray:
  """float64 logits of float32 probabilities, clipped as the module docstring says."""
  p = clipped(p)
  return np.log(p) - np.log1p(-p)


def scaled(p, temperature: float | None) -> np.ndarray:
  """sigmoid(logit(p) / temperature); p itself (float64) without a temperature."""
  if temperature is None:
    return np.asarray(p, np.float64)
  return 1 / (1 + np.exp(-logit(p) / temperature))


def nll(labels, p) -> float:
  labels, p = np.asarray(labels, bool), clipped(p)
  return float(-np.mean(np.where(labels, np.log(p), np.log1p(-p))))


def brier(labels, p) -> float:
  return float(np.mean((np.asarray(p, np.float64) - np.asarray(labels, np.float64)) ** 2))


def reliability(labels, p, bins: int = CALIBRATION_BINS) -> dict:
  """Equal-mass bins of the scores -> {'score': mean score, 'frequency': share positive,
  'count': images} per bin (lowest scores first); fewer bins when there are fewer images."""
  labels, p = np.asarray(labels, np.float64), np.asarray(p, np.float64)
  order = np.argsort(p, kind='mergesort')
  groups = [g for g in np.array_split(order, min(bins, len(p))) if len(g)]
  return {'score': [float(p[g].mean()) for g in groups],
          'frequency': [float(labels[g].mean()) for g in groups],
          'count': [int(len(g)) for g in groups]}


def ece(labels, p, bins: int = CALIBRATION_BINS) -> float:
  """Expected calibration error over equal-mass bins (see the module docstring)."""
  table = reliability(labels, p, bins)
  total = sum(table['count'])
  return float(sum(n / total * abs(f - s) for s, f, n in
                   zip(table['score'], table['frequency'], table['count'])))


def figures(labels, p) -> dict:
  """{'ece', 'nll', 'brier'}: None for each when there are no images."""
  if len(np.asarray(p)) == 0:
    return {'ece': None, 'nll': None, 'brier': None}
  return {'ece': ece(labels, p), 'nll': nll(labels, p), 'brier': brier(labels, p)}


def fit_temperature(labels, p) -> float | None:
  """The T minimising the NLL of sigmoid(logit(p) / T) on these images; None when one class is
  absent (any T > 0 then only moves every score towards that class)."""
  labels = np.asarray(labels, bool)
  if labels.all() or not labels.any():
    return None
  z = logit(p)
  signs = np.where(labels, 1.0, -1.0)

  def loss(log_t):  # mean -log sigmoid(sign * z / T), stable for large |z| / T
    return float(np.mean(np.logaddexp(0.0, -signs * z / np.exp(log_t))))

  low, high = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
  result = optimize.minimize_scalar(loss, bounds=(low, high), method='bounded',
                                    options={'xatol': 1e-6})
  return float(np.exp(result.x))


def threshold_at_fpr(labels, p, fpr: float) -> float | None:
  """The lowest threshold t (claims at p >= t) at which at most `fpr` of the negatives among
  these images are claimed: just above the (k+1)-th highest negative score, k = floor(fpr *
  negatives), taken as the next float32 so that it applies to float32 scores exactly. None
  without negatives."""
  labels = np.asarray(labels, bool)
  negatives = np.sort(np.asarray(p, np.float32)[~labels])[::-1]
  if not len(negatives):
    return None
  allowed = int(np.floor(fpr * len(negatives) + 1e-9))
  if allowed >= len(negatives):
    return 0.0
  return float(np.nextafter(negatives[allowed], np.float32(np.inf)))


def rates_at(labels, p, threshold: float | None) -> dict:
  """{'threshold', 'tpr', 'fpr'} of claims at p >= threshold; rates None where a class is
  absent, everything None without a threshold."""
  if threshold is None:
    return {'threshold': None, 'tpr': None, 'fpr': None}
  labels, claimed = np.asarray(labels, bool), np.asarray(p, np.float32) >= np.float32(threshold)
  return {'threshold': float(threshold),
          'tpr': float(claimed[labels].mean()) if labels.any() else None,
          'fpr': float(claimed[~labels].mean()) if (~labels).any() else None}


def fpr_key(fpr: float) -> str:
  return f'{fpr:g}'


def metric_name(fpr: float) -> str:
  """'tpr_at_fpr_1pct': the metrics.json key of an operating point."""
  return f'tpr_at_fpr_{100 * fpr:g}pct'


def fit_output(labels, p, with_temperature: bool = True) -> dict:
  """One output's calibration record from its validation labels and scores."""
  temperature = fit_temperature(labels, p) if with_temperature else None
  return {'temperature': temperature,
          'fpr_thresholds': {fpr_key(f): threshold_at_fpr(labels, p, f) for f in AT_FPR},
          'validation': {'images': int(len(labels)), 'positives': int(np.sum(labels)),
                         'nll': nll(labels, p) if len(labels) else None,
                         'nll_calibrated': (nll(labels, scaled(p, temperature))
                                            if temperature is not None else None)}}


def data_digest(*arrays) -> str:
  """sha256 of the arrays a fit read (their dtype, shape and bytes, in order)."""
  digest = hashlib.sha256()
  for array in arrays:
    array = np.ascontiguousarray(array)
    digest.update(f'{array.dtype.str}{array.shape}'.encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Calibration:
  """A model's fitted calibration: one record (fit_output) per output, None where none was
  fitted (a head composed from a run that had none)."""
  detection: dict | None
  heads: tuple

  @classmethod
  def from_json(cls, record: dict | None, num_heads: int) -> 'Calibration | None':
    if not record:
      return None
    heads = tuple(record.get('heads') or ())
    return cls(record.get('detection'), heads if heads else (None,) * num_heads)

  def to_json(self) -> dict:
    return {'detection': self.detection, 'heads': list(self.heads)}

  def describe(self, head_names) -> str:
    """'detector T=1.234, tconv T=0.871, ...' (outputs without a temperature left out)."""
    named = [('detector', self.detection)] + list(zip(head_names, self.heads))
    return ', '.join(f'{name} T={record["temperature"]:.3f}' for name, record in named
                     if record and record.get('temperature') is not None)

  def record(self, output: int) -> dict | None:
    """output 0: the detector; k + 1: head k."""
    return self.detection if output == 0 else self.heads[output - 1]

  def temperature(self, output: int) -> float | None:
    return (self.record(output) or {}).get('temperature')


def output_figures(labels, p, record: dict | None) -> dict:
  """The calibration figures of one output on one test set: ECE/NLL/Brier of the scores as they
  are, with their reliability bins; 'calibrated' (the same after the output's fitted
  temperature); and TPR/FPR at each AT_FPR operating point chosen on validation (None where the
  model has no calibration record)."""
  labels = np.asarray(labels, bool)
  result = figures(labels, p) | {'calibration_bins': CALIBRATION_BINS,
                                 'reliability': reliability(labels, p) if len(labels) else None}
  record = record or {}
  temperature = record.get('temperature')
  if temperature is not None:
    calibrated = scaled(p, temperature)
    result['calibrated'] = {'temperature': temperature, **figures(labels, calibrated),
                            'reliability': reliability(labels, calibrated) if len(labels) else None}
  for fpr in AT_FPR:
    result[metric_name(fpr)] = rates_at(labels, p,
                                        (record.get('fpr_thresholds') or {}).get(fpr_key(fpr)))
  return result


def check_record(record, where: str) -> str | None:
  """What is wrong with a stored calibration record (model.json's 'calibration'), or None."""
  if record in ({}, None):
    return None
  if not isinstance(record, dict) or not isinstance(record.get('heads', []), list):
    return f'{where}: expected {{"detection": ..., "heads": [...]}}'
  for name, output in [('detection', record.get('detection'))] + [
      (f'heads[{k}]', r) for k, r in enumerate(record.get('heads', []))]:
    if output is None:
      continue
    if not isinstance(output, dict):
      return f'{where}.{name}: expected an object or null'
    t = output.get('temperature')
    if t is not None and (not isinstance(t, (int, float)) or not np.isfinite(t) or t <= 0):
      return f'{where}.{name}.temperature is {t!r}; expected a positive number or null'
    thresholds = output.get('fpr_thresholds', {})
    if not isinstance(thresholds, dict) or not all(
        v is None or (isinstance(v, (int, float)) and np.isfinite(v))
        for v in thresholds.values()):
      return f'{where}.{name}.fpr_thresholds: expected {{"0.01": number or null, ...}}'
  return None
