"""Phase III, GANFP, DCT input: a ProGAN head on the frozen phase-II primary.

python launch.py --config=configs/phase3_progan_dct.py
"""
from configs import common


def get_config(arg: str = ''):
  return common.heads_phase(arg, dataset='ganfp', phase=3, sources=('progan',), target='progan',
                            input_kind='dct')
