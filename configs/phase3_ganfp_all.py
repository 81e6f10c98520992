"""Phase III, GANFP: all four heads (SNGAN, ProGAN, MMDGAN, CramerGAN) on the frozen phase-II primary.

python launch.py --config=configs/phase3_ganfp_all.py
"""
from configs import common


def get_config(arg: str = ''):
  return common.heads_phase(arg, dataset='ganfp', phase=3, sources=common.GANFP_SOURCES, target='ganfp_all')
