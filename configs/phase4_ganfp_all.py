"""Phase IV, GANFP: all four heads (SNGAN, ProGAN, MMDGAN, CramerGAN) retrained on multi-augmented images (phase IV).

python launch.py --config=configs/phase4_ganfp_all.py
"""
from configs import common


def get_config(arg: str = ''):
  return common.heads_phase(arg, dataset='ganfp', phase=4, sources=common.GANFP_SOURCES, target='ganfp_all')
