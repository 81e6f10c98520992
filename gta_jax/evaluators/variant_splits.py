"""Architecture-level attribution across generator variants (DNA-Det's and GTA-Net's question):
does a head claim its architecture's images when the generator's weights change (unseen seeds,
further training, fine-tuning, another loss, a wider network), and leave unseen architectures
alone? Each variant split (the built-in `variants` data, see
datasets/synthetic_fingerprints/generation.VARIANT_SPLITS) is scored clean, and for each:
  count                    images in the split
  recall/<architecture>    share of that architecture's images its head claims (heads only)
  unclaimed                share of the split's fakes that no head claims (a failed attribution,
                           the right answer for an unseen architecture)
  called_fake              share the primary calls fake (models with a detector)
  accuracy                 multiclass accuracy over images of architectures with a head (None when
                           the split holds none: unseen architectures); an unclaimed image counts
                           as called real, as in the paper's multiclass accuracy
  classes, confusion_matrix  rows true class (OTHER = -1: no head), columns the attributed one
With 'real/false_claims' (and '/by_head/<head>'): the share of the test split's real images that
some head claims. Metric names: 'crosstest/<split>/...', 'crosstest/real/...'.
"""
import numpy as np

from gta_jax.evaluators import common
from gta_jax.scoring import metrics
from gta_jax.scoring import verdicts

# Splits that are not generator variants: the paper's own test sets and the external generator.
NOT_VARIANTS = ('test', 'test_external')


class VariantSplits:

  def __init__(self, predict_fn, dataset, *, outputs: metrics.Outputs,
               thresholds: verdicts.Thresholds, batch_size: int, splits=None,
               real_split: str = 'test', predictions_dir=None):
    del predictions_dir
    self.predict_fn, self.dataset = predict_fn, dataset
    self.outputs, self.thresholds, self.batch_size = outputs, thresholds, batch_size
    self.splits, self.real_split = (tuple(splits) if splits else None), real_split

  def split_names(self) -> tuple[str, ...]:
    """The named splits, or every test split of the dataset that holds generator variants."""
    if self.splits is not None:
      return self.splits
    return tuple(name for name in self.dataset.builder.info.splits
                 if name.startswith('test_') and name not in NOT_VARIANTS)

  def _score(self, split):
    return common.score_split(self.predict_fn, self.dataset, split, mode='clean', seed=0,
                              batch_size=self.batch_size)

  def _attribution(self, scores) -> tuple[np.ndarray, np.ndarray]:
    """-> (claimed [K, N] bool, attributed source id [N], 0 = none / real), by the model's rule."""
    head_ids = np.asarray(self.outputs.head_ids)
    if self.outputs.multiclass == 'argmax':  # a softmax model attributes to its most probable class
      probs = np.concatenate([1 - scores['p_fake'][None], scores['p_heads']])
      predicted = verdicts.most_probable_class(probs, (0,) + tuple(self.outputs.head_ids))
      return predicted[None] == head_ids[:, None], predicted
    return (verdicts.claims(scores['p_heads'], self.thresholds),
            verdicts.attributed_source(scores['p_heads'], head_ids, self.thresholds))

  def run(self):
    if not self.outputs.head_names:
      return
    names = {i: name for name, i in self.dataset.source_ids.items()}
    real = self._score(self.real_split)
    is_real = real['label'] == 0
    claimed, _ = self._attribution(real)
    yield 'crosstest/real/count', int(is_real.sum())
    yield 'crosstest/real/false_claims', float(claimed[:, is_real].any(axis=0).mean())
    for k, head in enumerate(self.outputs.head_names):
      yield f'crosstest/real/by_head/{head}', float(claimed[k, is_real].mean())
    for split in self.split_names():
      scores = self._score(split)
      claimed, predicted = self._attribution(scores)
      prefix = f'crosstest/{split}'
      yield f'{prefix}/count', int(len(predicted))
      yield f'{prefix}/recall', {
          names[head_id]: metrics.recall_on_source(claimed[k], scores['source_id'], head_id)
          for k, head_id in enumerate(self.outputs.head_ids)
          if np.any(scores['source_id'] == head_id)}
      yield f'{prefix}/unclaimed', float(np.mean(~claimed.any(axis=0)))
      if self.outputs.detection:
        yield f'{prefix}/called_fake', float(np.mean(
            verdicts.called_fake(scores['p_fake'], self.thresholds)))
      truth, classes = metrics.multiclass_truth(scores['source_id'],
                                                (0,) + tuple(self.outputs.head_ids))
      covered = truth != metrics.OTHER
      yield f'{prefix}/accuracy', (metrics.multiclass_accuracy(truth[covered], predicted[covered])
                                   if covered.any() else None)
      yield f'{prefix}/classes', list(classes)
      yield f'{prefix}/confusion_matrix', metrics.confusion_matrix(truth, predicted,
                                                                   classes).tolist()
