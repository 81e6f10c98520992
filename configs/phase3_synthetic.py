"""Phase III on the built-in data: four one-vs-rest heads on the frozen phase-II primary.

python launch.py --config=configs/phase3_synthetic.py --config.init.primary=runs/phase2_synthetic
"""
from configs import common


def get_config(arg: str = ''):
  config = common.heads_phase(arg, dataset='synthetic', phase=3, sources=common.SYNTHETIC_SOURCES)
  # Validation, early stopping and export read a moving average of the heads' weights (about the
  # last 100 steps). Five seeds, clean F1 tconv / nearest / bilinear / pixelshuffle: 0.952 +-
  # 0.035 / 0.986 / 0.991 / 0.979 as trained, 0.961 +- 0.031 / 0.996 / 0.992 / 0.982 averaged,
  # 17 of the 20 (seed, head) figures equal or higher (README "What the quickstart measures").
  # Here, not in common.use_builtin: the architecture-attribution and open-set heads, which
  # share that recipe, choose their own.
  config.optim.weight_average_decay = 0.99
  return config
