"""Open set, leave one architecture out: phase-III heads for all built-in sources but one, whose
images are also dropped from training and validation, so that it is a generator no head has
seen, not even as a negative (gta_jax/tools/openset.py's unseen_architecture protocol).

for s in tconv nearest bilinear pixelshuffle; do
  python launch.py --config=configs/openset_synthetic.py:without_$s \
      --config.init.primary=runs/quickstart/phase2_synthetic
done
python -m gta_jax.openset --workdir runs/openset_synthetic   # per fold, and mean +- std

A second argument picks the heads' recipe from configs/architecture_attribution.py (default
`paper`, the paper's heads): `:without_tconv,frequency` trains the fold with the recipe that
config trains by default, into runs/openset_synthetic_frequency/without_tconv, so that the
unseen-architecture protocol judges the same heads as the `--variants` protocol does.
"""
from configs import architecture_attribution
from configs import common

FOLDS = tuple(f'without_{source}' for source in common.SYNTHETIC_SOURCES)
RECIPES = architecture_attribution.RECIPES


def get_config(arg: str = ''):
  tokens = common.variant_tokens(arg, FOLDS + RECIPES)
  left_out = [t for t in FOLDS if t in tokens]
  recipes = [t for t in RECIPES if t in tokens]
  if len(left_out) != 1 or len(recipes) > 1:
    raise ValueError(f'configs/openset_synthetic.py takes one fold: :{" or :".join(FOLDS)}, '
                     f'optionally one recipe of {", ".join(RECIPES)} and "smoke" '
                     '(e.g. ":without_tconv,frequency").')
  recipe = recipes[0] if recipes else 'paper'
  smoke = 'smoke' in tokens
  source = left_out[0][len('without_'):]
  sources = tuple(s for s in common.SYNTHETIC_SOURCES if s != source)
  config = common.heads_phase('smoke' if smoke else '', dataset='synthetic', phase=3,
                              sources=sources)
  config.name = ('openset_synthetic' + ('' if recipe == 'paper' else f'_{recipe}')
                 + f'/{left_out[0]}')
  # Truly unseen: the left-out source's images are not even negatives in training or validation.
  config.data.exclude_sources = (source,)
  return architecture_attribution.apply_recipe(config, recipe, smoke)
