"""What evaluators share: scoring every image of a split, and metric names <-> nested results."""
import numpy as np

from gta_jax import errors
from gta_jax.data import loader
from gta_jax.data import pipeline
from gta_jax.io import distributed
from gta_jax.io import progress


def score_split(predict_fn, dataset: loader.Dataset, split: str, *, mode: str, seed: int,
                batch_size: int, transform=None, only_real: bool = False) -> dict:
  """Scores every image of a split (no dropped last batch) under a fixed-seed perturbation.

  predict_fn: [B, H, W, 3] uint8 images -> (p_fake [B], p_heads [K, B]).
  transform: [B, H, W, 3] uint8 -> the same, applied on the host after the perturbation.
  only_real: keep the real images' scores only.
  -> host arrays p_fake [N], p_heads [K, N], label [N], source_id [N], and perturbations [N]
  (the bits of augment.KINDS each image's perturbation applied) where the batches carry them.
  """
  out = {'p_fake': [], 'p_heads': [], 'label': [], 'source_id': [], 'perturbations': []}
  batches = dataset.batches(split, batch_size, mode=mode, seed=seed)
  total = -(-dataset.size(split) // batch_size)
  for batch in progress.progress(batches, total=total, desc=f'scoring {split} ({mode})',
                                 unit='batches'):
    images = batch['image'] if transform is None else transform(batch['image'])
    p_fake, p_heads = distributed.to_host(predict_fn(loader.to_device(images)))
    batch = distributed.gather_rows(batch)  # every process scores the whole split
    keep = batch['mask'] & (batch['label'] == 0) if only_real else batch['mask']
    out['p_fake'].append(p_fake[keep])
    out['p_heads'].append(p_heads[:, keep])
    out['label'].append(batch['label'][keep])
    out['source_id'].append(batch['source_id'][keep])
    if 'perturbations' in batch:
      out['perturbations'].append(batch['perturbations'][keep])
  if len(out['perturbations']) != len(out['label']):  # a source that does not record them
    del out['perturbations']
  return {k: np.concatenate(v, axis=-1) for k, v in out.items()}


def test_set_seed(mode: str) -> int:
  if mode not in pipeline.TEST_SET_SEEDS:
    raise errors.ConfigError(f'unknown test set {mode!r}; choose from '
                     f'{", ".join(pipeline.TEST_SET_SEEDS)}.')
  return pipeline.TEST_SET_SEEDS[mode]


def flatten(results: dict, prefix: str = ''):
  """{'clean': {'detection': {'f1': 0.9}}} -> ('clean/detection/f1', 0.9), ...; an empty dict is
  kept as a value so that nesting restores it."""
  for key, value in results.items():
    name = f'{prefix}/{key}' if prefix else str(key)
    if isinstance(value, dict) and value:
      yield from flatten(value, name)
    else:
      yield name, value


def nest(pairs) -> dict:
  """The inverse of `flatten`: ('clean/detection/f1', 0.9), ... -> nested dicts, in order."""
  results: dict = {}
  for name, value in pairs:
    *parents, leaf = name.split('/')
    node = results
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = value
  return results
