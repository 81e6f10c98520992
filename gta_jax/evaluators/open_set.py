"""The open-set protocols of a finished heads run (see gta_jax/scoring/openset.py for the scores
and calibrations): unseen architectures, unseen seeds (both views), unseen variant
architectures, an unseen dataset; and their mean and spread over several runs (folds)."""
import pathlib

import numpy as np

from gta_jax.io import checkpoints
from gta_jax.scoring import metrics
from gta_jax.scoring import verdicts
from gta_jax.scoring.openset import evaluate_protocol
from gta_jax.scoring.openset import FEATURE_SCORES
from gta_jax.scoring.openset import load_knn
from gta_jax.scoring.openset import Mahalanobis
from gta_jax.scoring.openset import most_claiming_head
from gta_jax.scoring.openset import NearestNeighbours
from gta_jax.scoring.openset import VARIANT_ARCHITECTURES
from gta_jax.scoring.openset_fit import HeadsRun


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
