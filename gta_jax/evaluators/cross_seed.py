"""Architecture-level attribution: each head's recall on its architecture's images from generators
trained from another seed (the built-in data's test_cross_seed split).
Metric names: 'cross_seed/<head>/recall'."""
from gta_jax.evaluators import common
from gta_jax.scoring import metrics
from gta_jax.scoring import verdicts


class CrossSeed:

  def __init__(self, predict_fn, dataset, *, outputs: metrics.Outputs,
               thresholds: verdicts.Thresholds, batch_size: int, split: str = 'test_cross_seed',
               predictions_dir=None):
    del predictions_dir
    self.predict_fn, self.dataset = predict_fn, dataset
    self.outputs, self.thresholds, self.batch_size, self.split = outputs, thresholds, batch_size, split

  def run(self):
    if not self.outputs.head_names or not self.dataset.has_split(self.split):
      return
    scores = common.score_split(self.predict_fn, self.dataset, self.split, mode='clean', seed=0,
                                batch_size=self.batch_size)
    claimed = verdicts.claims(scores['p_heads'], self.thresholds)
    for k, name in enumerate(self.outputs.head_names):
      yield f'cross_seed/{name}/recall', metrics.recall_on_source(
          claimed[k], scores['source_id'], self.outputs.head_ids[k])
