"""Phase III, GANFP, DCT input: a ProGAN head on the frozen phase-II DCT primary.

python launch.py --config=configs/phase3_progan_dct.py
"""
from configs import common


def get_config(arg: str = ''):
  config = common.use_ganfp(common.get_config(), 'dct')
  common.heads_phase(config, 3, 'phase3_progan_dct', ('progan',), primary_run='runs/phase2_ganfp_dct')
  return common.variant(config, arg)
