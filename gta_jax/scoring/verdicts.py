"""The one rule from scores to what the system claims, used by `attribute`, the metrics and the
evaluators alike.

p_fake: the primary's probability that an image is fake. p_heads: each head's probability that
the image comes from the head's source. An output claims an image when its probability reaches its
threshold (the release's `0 if p < 0.5 else 1` at the default 0.5). Thresholds come from
`config.eval.threshold` and are stored in the model bundle.
"""
import dataclasses

import numpy as np

from gta_jax import errors

DEFAULT_THRESHOLD = 0.5


@dataclasses.dataclass(frozen=True)
class Thresholds:
  fake: float = DEFAULT_THRESHOLD            # the primary calls an image fake at p_fake >= fake
  heads: float | tuple[float, ...] = DEFAULT_THRESHOLD  # one for every head, or one per head

  def for_heads(self, num_heads: int) -> np.ndarray:
    """-> [K] float64, one threshold per head."""
    if isinstance(self.heads, (int, float)):
      return np.full(num_heads, float(self.heads))
    if len(self.heads) != num_heads:
      raise errors.ConfigError(f'{len(self.heads)} head thresholds for {num_heads} heads.')
    return np.asarray(self.heads, np.float64)

  def to_json(self) -> dict:
    heads = self.heads if isinstance(self.heads, (int, float)) else list(self.heads)
    return {'fake': float(self.fake), 'heads': heads}

  @classmethod
  def from_json(cls, record: dict | None) -> 'Thresholds':
    if not record:
      return cls()
    heads = record.get('heads', DEFAULT_THRESHOLD)
    return cls(float(record.get('fake', DEFAULT_THRESHOLD)),
               float(heads) if isinstance(heads, (int, float)) else tuple(map(float, heads)))


def called_fake(p_fake, thresholds: Thresholds) -> np.ndarray:
  """[N] -> [N] bool: the primary says fake."""
  return np.asarray(p_fake) >= thresholds.fake


def claims(p_heads, thresholds: Thresholds) -> np.ndarray:
  """[K, N] -> [K, N] bool: head k claims image n."""
  p_heads = np.asarray(p_heads)
  return p_heads >= thresholds.for_heads(p_heads.shape[0])[:, None]


def attributed_source(p_heads, head_ids, thresholds: Thresholds) -> np.ndarray:
  """[K, N] head scores -> [N] source id: the claiming head with the highest score, 0 (real) when no
  head claims (a failed attribution counts as real, as the paper's multiclass accuracy)."""
  p_heads = np.asarray(p_heads, np.float64)
  claimed = claims(p_heads, thresholds)
  if p_heads.shape[0] == 0:
    return np.zeros(p_heads.shape[1], np.int64)
  best = np.argmax(np.where(claimed, p_heads, -np.inf), axis=0)
  return np.where(claimed.any(axis=0), np.asarray(head_ids)[best], 0)


def verdict(p_fake: float, p_heads: dict[str, float], thresholds: Thresholds,
            open_set: bool = False, known: bool = True) -> str:
  """real | fake | unknown | attributed:<h> | multiple:<h1>,<h2> | contradiction:<h>[,<h2>].

  open_set: the head thresholds are calibrated ones (gta_jax/tools/openset.py), and a fake that no head
  claims is `unknown` (from a generator no head knows) rather than a plain `fake`. known: False
  when an open-set score (the kNN distance) says the image lies away from every known source:
  a fake is then `unknown` whatever the heads claim.
  """
  names = list(p_heads)
  claimed = claims(np.asarray([[p_heads[n]] for n in names]).reshape(len(names), 1), thresholds)
  claimers = [name for name, c in zip(names, claimed[:, 0]) if c]
  if not called_fake(p_fake, thresholds):
    return f'contradiction:{",".join(claimers)}' if claimers else 'real'
  if open_set and not known:
    return 'unknown'
  if not claimers:
    return 'unknown' if open_set else 'fake'
  return f'attributed:{claimers[0]}' if len(claimers) == 1 else f'multiple:{",".join(claimers)}'


def most_probable_class(probs, class_ids) -> np.ndarray:
  """A softmax model's rule (the multiclass baselines): [C, N] class probabilities -> [N] id of
  the most probable class."""
  return np.asarray(class_ids)[np.argmax(np.asarray(probs), axis=0)]
