"""Heads that aim at a generator's architecture rather than its weights (DNA-Det, GTA-Net): phase
III on a given frozen primary with an architecture recipe (config.recipe), then cross-tested on
unseen seeds, further-trained, fine-tuned, retrained and wider generators.

python launch.py --config=configs/architecture_attribution.py \
    --config.init.primary=runs/quickstart/phase2_synthetic
python -m gta_jax.crosstest --workdir runs/architecture_attribution

The argument picks a recipe of the ablation (benchmarks/architecture_ablation.py); none =
`frequency`, which met more of the issue's targets than any other in that ablation (clean F1
per head, false claims on real images, fine-tuned and further-trained generators), while
`contrastive` recalls unseen seeds best (docs/research/2026-11-23-architecture-recipes-ablation.md):
  paper        the paper's heads (whole images, BCE)
  patches      + random windows, one loss each (DNA-Det's patch training)
  contrastive  + patches + the supervised contrastive loss on projected head features
  frequency    + contrastive + auxiliary frequency maps beside the mid features (phase-only
               spectrum, high-pass residual, 4x4-block log-DCT: gta_jax/models/frequency.py)
  pretrained   + frequency + DNA-Det's pre-training of the heads' convs on classifying image
               transformations of the real training images (gta_jax/families/pretrain.py)

The heads train on the built-in data's `multiseed5` config: each architecture's training fakes
come from five generators trained from different seeds, so what a head can learn that holds
for all five is the architecture, not one seed's weights; validation and export read a moving
average of the weights (optim.weight_average_decay), which kept five seeds' heads from claiming
real images (docs/research/2026-12-05-architecture-training-seeds.md).
`one_seed` (e.g. `:frequency,one_seed`) trains on `default`, one seed per architecture, the
paper's and DNA-Det's protocol, without the average, as measured there.
"""
from configs import common

RECIPES = ('paper', 'patches', 'contrastive', 'frequency', 'pretrained')
DEFAULT_RECIPE = 'frequency'


ONE_SEED = 'one_seed'  # the token for the paper's and DNA-Det's one training seed per architecture


def get_config(arg: str = ''):
  tokens = common.variant_tokens(arg, RECIPES + (ONE_SEED,))
  chosen = [t for t in RECIPES if t in tokens]
  if len(chosen) > 1:
    raise ValueError(f'configs/architecture_attribution.py takes one recipe of {", ".join(RECIPES)}.')
  recipe = chosen[0] if chosen else DEFAULT_RECIPE
  smoke = 'smoke' in tokens
  config = common.heads_phase('smoke' if smoke else '', dataset='synthetic', phase=3,
                              sources=common.SYNTHETIC_SOURCES)
  config.name = ('architecture_attribution' + ('' if recipe == DEFAULT_RECIPE else f'_{recipe}')
                 + (f'_{ONE_SEED}' if ONE_SEED in tokens else ''))
  config.init.primary = 'runs/quickstart/phase2_synthetic'
  config = apply_recipe(config, recipe, smoke)
  if ONE_SEED not in tokens:
    # Each architecture's training and validation fakes come from 5 generators trained from
    # different seeds (its test and variant splits are the default's): a head then has to find
    # what the seeds share, the architecture. The primary stays the one trained on `default`.
    config.data.config = several_seeds_data(smoke)
    # Validation, early stopping and export read an average of the weights over about the last
    # epoch (~100 steps), which keeps these heads from claiming real images.
    config.optim.weight_average_decay = 0.99
    if not smoke:
      # The heads' full 10 epochs, also for `frequency` (its validation loss still falls after 6).
      config.optim.max_epochs = 10
  return config


def several_seeds_data(smoke: bool) -> str:
  """The built-in data's config with 5 training seeds per architecture (its smoke size: 3)."""
  return 'smoke_multiseed' if smoke else 'multiseed5'


def apply_recipe(config, recipe: str, smoke: bool):
  """Sets one recipe of RECIPES on a heads config (also used by the open-set folds,
  configs/openset_synthetic.py, so that a fold trains exactly the heads this config trains)."""
  if recipe not in RECIPES:
    raise ValueError(f'unknown recipe {recipe!r}; one of {", ".join(RECIPES)}.')
  if recipe != 'paper':
    # 4 windows of 64 px per 128 px image: the heads see as many pixels per step as on whole
    # images (DNA-Det's 16 would quadruple a step).
    config.recipe.patches = 4
    config.recipe.patch_size = 16 if smoke else 64
  config.recipe.contrastive = recipe in ('contrastive', 'frequency', 'pretrained')
  if recipe != 'paper':
    # What these recipes were measured with; their heads claim next to no other source's images
    # at it, so the lower weight the paper's heads train with has no precision to win back here.
    config.optim.head_positive_weight = 4.0
  if recipe in ('frequency', 'pretrained'):
    config.recipe.frequency_inputs = ('phase', 'highpass', 'dct')
  if recipe == 'frequency' and not smoke:
    # 6 epochs, not the heads' 10: as good on every cross-test figure, in two thirds of the time
    # (docs/research/2026-11-23-architecture-recipes-ablation.md).
    config.optim.max_epochs = 6
  if recipe == 'pretrained':
    config.recipe.pretrain_steps = 20 if smoke else 300
  return config
