"""Evaluators as plug-ins, built from `config.evals` (big_vision's shape).

config.evals.<name> = dict(type=<a key of EVALUATORS>, **its options). An evaluator knows a
predict function (uint8 images -> (p_fake, p_heads)) and its own data, and its `run()` yields
(metric name, value) pairs; names are '/'-paths that `run_all` nests into results/metrics.json.
A new test protocol is a new module here and one line in EVALUATORS, not a branch in the trainer.
"""
from gta_jax import errors
from gta_jax.evaluators import cross_seed
from gta_jax.evaluators import softened_reals
from gta_jax.evaluators import test_sets
from gta_jax.evaluators import variant_splits
from gta_jax.evaluators.common import flatten  # noqa: F401  (re-exported)
from gta_jax.evaluators.common import nest

EVALUATORS = {
    'test_sets': test_sets.TestSets,
    'cross_seed': cross_seed.CrossSeed,
    'variant_splits': variant_splits.VariantSplits,
    'softened_reals': softened_reals.SoftenedReals,
}


def build(evals_config, predict_fn, dataset, **shared) -> list:
  """Every evaluator of config.evals, in order. shared: outputs, thresholds, batch_size,
  predictions_dir (what every evaluator receives)."""
  built = []
  for name, options in evals_config.items():
    options = dict(options)
    kind = options.pop('type', None)
    if kind not in EVALUATORS:
      raise errors.ConfigError(f'config.evals.{name}.type={kind!r}: choose one of '
                       f'{", ".join(EVALUATORS)}.')
    try:
      built.append(EVALUATORS[kind](predict_fn, dataset, **shared, **options))
    except (TypeError, ValueError) as e:  # an unknown option, or a value it refuses
      raise errors.ConfigError(f'config.evals.{name}: {e}') from None
  return built


def run_all(evaluators) -> dict:
  """Runs each evaluator and nests all their named metrics into one results dict."""
  return nest(pair for evaluator in evaluators for pair in evaluator.run())
