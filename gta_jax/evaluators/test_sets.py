"""The paper's test sets: metrics on the test split under each fixed-seed perturbation
(clean, multi, jpeg, crop, blur, noise), with external accuracy (EXA) on an unseen generator's
split under the same perturbation. Metric names: '<mode>/detection/<metric>',
'<mode>/heads/<head>/<metric>', '<mode>/multiclass/<metric>', and for a perturbed test set the
same on the images each perturbation touched or spared:
'<mode>/by_perturbation/<with_blur|without_blur|...|none>/...' (metrics.by_perturbation)."""
import pathlib

import numpy as np

from gta_jax.data import augment
from gta_jax.evaluators import common
from gta_jax.io import distributed
from gta_jax.io.writers import log
from gta_jax.scoring import metrics
from gta_jax.scoring import verdicts


class TestSets:

  def __init__(self, predict_fn, dataset, *, outputs: metrics.Outputs,
               thresholds: verdicts.Thresholds, batch_size: int, split: str = 'test',
               modes=('clean', 'multi', 'jpeg', 'crop'), external_split: str = 'test_external',
               predictions_dir=None):
    self.predict_fn, self.dataset = predict_fn, dataset
    self.outputs, self.thresholds, self.batch_size = outputs, thresholds, batch_size
    self.split, self.modes, self.external_split = split, tuple(modes), external_split
    self.predictions_dir = pathlib.Path(predictions_dir) if predictions_dir else None
    for mode in self.modes:
      common.test_set_seed(mode)  # a bad name fails before anything is scored

  def _scores(self, split, mode):
    return common.score_split(self.predict_fn, self.dataset, split, mode=mode,
                              seed=common.test_set_seed(mode), batch_size=self.batch_size)

  def run(self):
    for mode in self.modes:
      scores = self._scores(self.split, mode)
      if self.predictions_dir and distributed.is_main_process():  # raw scores, for curves and re-analysis
        self.predictions_dir.mkdir(parents=True, exist_ok=True)
        np.savez(self.predictions_dir / f'{mode}.npz', **scores)
      result = metrics.summarize(scores, self.outputs, self.thresholds)
      if augment.kinds_of(mode) and 'perturbations' in scores:
        touched = {kind: augment.touched(scores['perturbations'], kind)
                   for kind in augment.kinds_of(mode)}
        result['by_perturbation'] = metrics.by_perturbation(scores, self.outputs,
                                                            self.thresholds, touched)
      if self.external_split and self.dataset.has_split(self.external_split):
        size = self.dataset.image_size_of(self.external_split)
        if self.outputs.any_input_size or size == self.dataset.image_size:
          self._add_external(result, self._scores(self.external_split, mode))
        else:  # a DCT model or a flattening baseline takes its training size only
          self._add_external(result, None)
          log(f'test[{mode}]: external accuracy not measured: {self.external_split} holds '
              f'{size} px images and this model takes {self.dataset.image_size} px only')
      detection = result.get('detection')
      parts = [f'detection acc {detection["accuracy"]:.4f}'] if detection else []
      parts += [f'{name} F1 {m["f1"]:.3f}' for name, m in result['heads'].items()]
      log(f'test[{mode}]: ' + ', '.join(parts))
      yield from common.flatten(result, mode)

  def _add_external(self, result: dict, external: dict | None) -> None:
    """EXA from the external split's scores; None (not measured) when there are none."""
    if self.outputs.detection:
      result['detection']['external_accuracy'] = None if external is None else (
          metrics.external_accuracy_detection(
              verdicts.called_fake(external['p_fake'], self.thresholds)))
    claimed = None if external is None else verdicts.claims(external['p_heads'], self.thresholds)
    for k, name in enumerate(self.outputs.head_names):
      result['heads'][name]['external_accuracy'] = (
          None if claimed is None else metrics.external_accuracy_head(claimed[k]))
