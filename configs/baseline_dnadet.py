"""The DNA-Det baseline on the built-in data (gta_jax/families/dnadet.py): one multiclass
network over real + the four sources, trained from scratch on 4 random 64 px crops per image
with cross-entropy plus the supervised contrastive loss (learned weights), cross-tested as the
heads are.

python launch.py --config=configs/baseline_dnadet.py
python -m gta_jax.crosstest --workdir runs/baseline_dnadet

Width 16 (the release's 64 quadruples the channels and ~16x the work of every layer, too slow
for 2 CPU cores; --config.model.dnadet_width=64 restores it).
"""
from configs import common


def get_config(arg: str = ''):
  common.variant_tokens(arg)
  config = common._dataset_config('synthetic', 3, 'pixel')  # built-in budgets of a heads phase
  config.name = 'baseline_dnadet'
  config.model.family, config.task = 'dnadet', 'multiclass'
  config.sources = common.SYNTHETIC_SOURCES
  config.model.dnadet_width = 16
  config.recipe.patches, config.recipe.patch_size = 4, 64
  config.recipe.contrastive = True
  # The cross_seed evaluator counts claims at p >= 0.5; a softmax model attributes by argmax,
  # which crosstest's variant splits (test_cross_seed among them) apply.
  with config.unlocked():
    del config.evals['test_cross_seed']
  config = common.variant(config, arg)
  if 'smoke' in common.variant_tokens(arg):
    config.recipe.patch_size = 16
  return config
