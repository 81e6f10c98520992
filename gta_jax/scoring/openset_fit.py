"""The open-set calibration of a finished heads run: its outputs on every split it is fitted and
scored on (HeadsRun), and the fit of the per-head thresholds and the kNN bank stored in its model
bundle (the heads family's export hook runs it; `gta-openset --fit` refits)."""
import copy
import dataclasses
import functools
import hashlib
import pathlib

import jax
import numpy as np

from gta_jax import errors
from gta_jax.data import loader
from gta_jax.data import pipeline
from gta_jax.io import checkpoints
from gta_jax.io import distributed
from gta_jax.io import outputs
from gta_jax.io import progress
from gta_jax.io import run_records
from gta_jax.io import workdir_lock
from gta_jax.io.writers import log
from gta_jax.models import networks
from gta_jax.models import spectral
from gta_jax.scoring.openset import calibrate
from gta_jax.scoring.openset import CALIBRATION_TPR
from gta_jax.scoring.openset import DOC_ALPHA
from gta_jax.scoring.openset import FITTING_SPLITS
from gta_jax.scoring.openset import KNN_ACCEPTANCE
from gta_jax.scoring.openset import KNN_BANK_FILE
from gta_jax.scoring.openset import KNN_K
from gta_jax.scoring.openset import KNN_OPERATING_POINTS
from gta_jax.scoring.openset import NearestNeighbours
from gta_jax.scoring.openset import tpr_threshold


@functools.partial(jax.jit, static_argnames=('input_kind', 'num_heads', 'frequency_inputs'))
def _head_outputs(variables, constants, images, *, input_kind: str, num_heads: int,
                  frequency_inputs: tuple[str, ...] = ()):
  """-> (head logits [K, B], pooled features [B, 16 + 32K]: networks.pooled_features)."""
  x = spectral.preprocess(images, input_kind, constants)
  out = networks.predict(variables, x, input_kind=input_kind, num_heads=num_heads,
                       frequency_inputs=frequency_inputs)
  return out.heads.logit, networks.pooled_features(out)


@dataclasses.dataclass
class HeadsRun:
  """A finished heads run: its bundle, dataset, and the head ids in the dataset.

  `dataset` gives the test splits; the training and validation splits (the fit, the kNN bank,
  the Mahalanobis statistics) always come from `trained_on`, the data the heads were trained
  on: a run on `multiseed` scored on the `variants` splits still fits on its own images."""
  workdir: pathlib.Path
  spec: checkpoints.ModelSpec
  variables: dict
  dataset: loader.Dataset
  head_ids: tuple[int, ...]
  batch_size: int
  trained_on: loader.Dataset
  # (mean, std) of the DCT input as the heads were trained (the bundle's); None: trained_on's.
  dct_stats: tuple | None = None
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
    spec, variables, dct_stats = checkpoints.load_model_bundle(bundle)
    if spec.arch != 'proposed' or not spec.head_names:
      raise errors.ConfigError(f'{workdir} is not a heads run (phase III/IV): open-set scores '
                               'come from attribution heads.')
    config = run_records.load_run_config(workdir)
    if data_dir:
      config.data.data_dir = data_dir
    trained_on = dataset = loader.open_dataset(config.data, spec.input_kind)
    if variants:
      test_data = copy.deepcopy(config.data)
      test_data.config = pipeline.variants_config(config.data.name, config.data.config)
      if test_data.config != config.data.config:
        dataset = loader.open_dataset(test_data, spec.input_kind)
    head_ids = tuple(dataset.source_id(name) for name in spec.head_names)
    distributed.check_batch_size(config.eval.batch_size, 'eval.batch_size')
    if dct_stats is not None:
      dct_stats = tuple(np.asarray(a, np.float32) for a in dct_stats)
    return cls(workdir, spec, variables, dataset, head_ids, config.eval.batch_size, trained_on,
               dct_stats)

  def outputs(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (head logits [K, N], pooled features [N, D], source ids [N]) over every image of a
    split (clean)."""
    if split not in self._outputs:
      self._outputs[split] = self._compute_outputs(split)
    return self._outputs[split]

  def _compute_outputs(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean, std = self.dct_stats if self.dct_stats is not None else self.trained_on.dct_stats
    constants = distributed.replicate({'dct_mean': mean, 'dct_std': std})
    variables = distributed.replicate(self.variables)
    logits, features, sources = [], [], []
    source = self.trained_on if split in FITTING_SPLITS else self.dataset
    # As stored: no training-only widening (jitter, softened reals), so that the thresholds and
    # the kNN bank describe images as attribute will meet them, as the test splits are.
    batches = source.batches(split, self.batch_size, seed=0, as_trained=False)
    for batch in progress.progress(batches, total=-(-source.size(split) // self.batch_size),
                                   desc=f'open-set outputs on {split}', unit='batches'):
      z, f = distributed.to_host(_head_outputs(variables, constants, loader.to_device(batch['image']),
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
  with workdir_lock.locked(run.workdir, 'open-set fit', distributed.is_main_process(),
                           distributed.main_process_says):
    return _fit(run, knn_acceptance)


def _fit(run: HeadsRun, knn_acceptance: float) -> dict:
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
                     'bank': bank_file_name(bank), 'images': int(len(bank))}
    if distributed.is_main_process():
      with outputs.staged(bundle / fitted['knn']['bank']) as staging:
        with open(staging, 'wb') as f:
          np.save(f, bank)
  else:
    log(f'{run.workdir}: no kNN calibration: {known_training} training images of the heads\' '
        f'sources, fewer than k={KNN_K}.')
  record = {**fitted, 'split': 'validation', 'mode': 'clean', 'tpr': CALIBRATION_TPR,
            'doc_alpha': DOC_ALPHA}
  # The bank is written under a name of its own content, then model.json is swapped to it in
  # one rename, then the previous bank goes: a fit killed at any point leaves a bundle whose
  # model.json and bank agree (was: one bank file rewritten in place, which a kill between the
  # two writes left failing its digest, refused by every command, the refit included).
  previous = (run.spec.open_set or {}).get('knn', {}).get('bank')
  new = fitted['knn']['bank'] if 'knn' in fitted else None
  stale = (previous,) if previous and previous != new else ()
  checkpoints.update_model_spec(bundle, open_set=record, rewritten=(new,) if new else (),
                                removed=stale)
  if distributed.is_main_process():
    for name in stale:
      (bundle / name).unlink(missing_ok=True)
  run.spec = dataclasses.replace(run.spec, open_set=record)
  return record


def bank_file_name(bank: np.ndarray) -> str:
  """open_set_knn_bank-<first 12 hex digits of the bank's sha256>.npy."""
  digest = hashlib.sha256(np.ascontiguousarray(bank).tobytes()).hexdigest()[:12]
  stem, suffix = KNN_BANK_FILE.rsplit('.', 1)
  return f'{stem}-{digest}.{suffix}'


