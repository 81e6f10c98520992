"""Phase III on the built-in data: four one-vs-rest heads on the frozen phase-II primary.

python launch.py --config=configs/phase3_synthetic.py --config.init.primary=runs/phase2_synthetic
"""
from configs import common


def get_config(arg: str = ''):
  return common.heads_phase(arg, dataset='synthetic', phase=3, sources=common.SYNTHETIC_SOURCES)
