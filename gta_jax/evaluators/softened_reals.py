"""A shortcut probe: does softness alone make a real image look fake?

A detector trained on fakes that are softer than their real inputs can learn "soft = fake" and
then calls defocused, hazy or dark camera photos fake (the built-in data's fakes are;
docs/research/2026-12-02-softness-shortcut.md). This scores the test split's real images after fixed softenings, one of them
(a LANCZOS down- and up-scale) of a kind the training never applies, and reports the share
called fake and, for heads, the share some head claims. Metric names:
'softened_real/<kind>/false_positive_rate', 'softened_real/<kind>/false_claims'.
"""
import numpy as np
from PIL import Image

from gta_jax.data import augment
from gta_jax.evaluators import common
from gta_jax.scoring import metrics
from gta_jax.scoring import verdicts


def gaussian(sigma: float):
  def soften(images):
    return np.stack([augment.gaussian_blur(image, sigma) for image in images])
  return soften


def rescaled(factor: float):
  """Down-scaled by `factor` and back up, both LANCZOS (a resampling softness, not a blur)."""
  def soften(images):
    out = []
    for image in images:
      height, width = image.shape[:2]
      small = (max(1, round(width / factor)), max(1, round(height / factor)))
      pil = Image.fromarray(image).resize(small, Image.Resampling.LANCZOS)
      out.append(np.asarray(pil.resize((width, height), Image.Resampling.LANCZOS)))
    return np.stack(out)
  return soften


SOFTENINGS = {'blur_0.7': gaussian(0.7), 'blur_1.0': gaussian(1.0), 'blur_1.5': gaussian(1.5),
              'lanczos_x1.5': rescaled(1.5)}


class SoftenedReals:

  def __init__(self, predict_fn, dataset, *, outputs: metrics.Outputs,
               thresholds: verdicts.Thresholds, batch_size: int, split: str = 'test',
               kinds=tuple(SOFTENINGS), predictions_dir=None):
    del predictions_dir
    unknown = [kind for kind in kinds if kind not in SOFTENINGS]
    if unknown:
      raise ValueError(f'unknown softening {", ".join(unknown)}; choose from '
                       f'{", ".join(SOFTENINGS)}')
    self.predict_fn, self.dataset, self.split, self.kinds = predict_fn, dataset, split, tuple(kinds)
    self.outputs, self.thresholds, self.batch_size = outputs, thresholds, batch_size

  def run(self):
    if not self.dataset.has_split(self.split):
      return
    for kind in self.kinds:
      scores = common.score_split(self.predict_fn, self.dataset, self.split, mode='clean', seed=0,
                                  batch_size=self.batch_size, transform=SOFTENINGS[kind],
                                  only_real=True)
      if self.outputs.detection:
        yield (f'softened_real/{kind}/false_positive_rate',
               float(np.mean(verdicts.called_fake(scores['p_fake'], self.thresholds))))
      if self.outputs.head_names:
        claimed = verdicts.claims(scores['p_heads'], self.thresholds)
        yield f'softened_real/{kind}/false_claims', float(np.mean(claimed.any(axis=0)))
