"""Phase III on the built-in data: four one-vs-rest heads on the frozen phase-II primary.

python launch.py --config=configs/phase3_synthetic.py   (on runs/phase2_synthetic, beside its workdir)

A head for a new generator from a folder dataset (docs/data.md), on the same primary:
python launch.py --config=configs/phase3_synthetic.py --config.data.name=folder \
    --config.data.config=newgan-60-20-20 --config.sources="('newgan',)" --config.name=heads_newgan
"""
from configs import common


def get_config(arg: str = ''):
  config = common.heads_phase(arg, dataset='synthetic', phase=3, sources=common.SYNTHETIC_SOURCES)
  # Validation, early stopping and export read a moving average of the heads' weights (about the
  # last 100 steps; docs/research/2026-12-05-phase3-averaged-weights.md). Here, not in common.use_builtin: the architecture-attribution and open-set heads, which
  # share that recipe, choose their own.
  config.optim.weight_average_decay = 0.99
  return config
