"""The one verdict rule: what attribute prints, what the metrics count and the evaluators use."""
import numpy as np
import pytest

from gta_jax.scoring import verdicts

DEFAULT = verdicts.Thresholds()


@pytest.mark.parametrize('p_fake, heads, expected', [
    (0.9, {'a': 0.1, 'b': 0.2}, 'fake'),
    (0.9, {'a': 0.7, 'b': 0.2}, 'attributed:a'),
    (0.9, {'a': 0.7, 'b': 0.5}, 'multiple:a,b'),
    (0.2, {'a': 0.1}, 'real'),
    (0.2, {'a': 0.9}, 'contradiction:a'),
    (0.5, {}, 'fake'),  # the release's threshold: p >= 0.5 is positive
    (0.4999, {}, 'real'),
])
def test_verdicts_at_the_release_threshold(p_fake, heads, expected):
  assert verdicts.verdict(p_fake, heads, DEFAULT) == expected


def test_thresholds_move_every_rule_together():
  strict = verdicts.Thresholds(fake=0.95, heads=(0.8, 0.3))
  assert verdicts.verdict(0.9, {'a': 0.7, 'b': 0.4}, strict) == 'contradiction:b'
  assert verdicts.verdict(0.96, {'a': 0.7, 'b': 0.2}, strict) == 'fake'
  p_heads = np.array([[0.9, 0.7, 0.2], [0.5, 0.4, 0.35]])
  np.testing.assert_array_equal(verdicts.claims(p_heads, strict),
                                [[True, False, False], [True, True, True]])
  # Highest *claiming* head wins; with no claim the source is real (0).
  np.testing.assert_array_equal(verdicts.attributed_source(p_heads, (3, 7), strict), [3, 7, 7])
  np.testing.assert_array_equal(verdicts.attributed_source(p_heads, (3, 7), DEFAULT), [3, 3, 0])
  np.testing.assert_array_equal(verdicts.called_fake([0.9, 0.96], strict), [False, True])


def test_thresholds_round_trip_through_json_and_check_their_length():
  for t in (verdicts.Thresholds(), verdicts.Thresholds(0.7, (0.2, 0.9))):
    assert verdicts.Thresholds.from_json(t.to_json()) == t
  assert verdicts.Thresholds.from_json(None) == DEFAULT
  with pytest.raises(ValueError, match='2 head thresholds for 3 heads'):
    verdicts.Thresholds(0.5, (0.1, 0.2)).for_heads(3)


def test_a_softmax_model_claims_its_most_probable_class():
  probs = np.array([[0.5, 0.1], [0.2, 0.3], [0.3, 0.6]])  # classes real, 2, 4
  np.testing.assert_array_equal(verdicts.most_probable_class(probs, (0, 2, 4)), [0, 4])
