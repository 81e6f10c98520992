"""Phase IV on the built-in data: the phase-III heads retrained on multi-augmented images.

python launch.py --config=configs/phase4_synthetic.py --config.init.from_run=runs/phase3_synthetic
"""
from configs import common


def get_config(arg: str = ''):
  return common.heads_phase(arg, dataset='synthetic', phase=4, sources=common.SYNTHETIC_SOURCES)
