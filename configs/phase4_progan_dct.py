"""Phase IV, GANFP, DCT input: a ProGAN head retrained on multi-augmented images (phase IV).

python launch.py --config=configs/phase4_progan_dct.py
"""
from configs import common


def get_config(arg: str = ''):
  return common.heads_phase(arg, dataset='ganfp', phase=4, sources=('progan',), target='progan',
                            input_kind='dct')
