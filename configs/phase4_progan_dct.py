"""Phase IV, GANFP: retrain the phase-III progan_dct head(s) on multi-augmented images.

python launch.py --config=configs/phase4_progan_dct.py
"""
from configs import common, phase3_progan_dct


def get_config(arg: str = ''):
  config = phase3_progan_dct.get_config('')
  common.heads_phase(config, 4, 'phase4_progan_dct', config.heads,
                     previous_run='runs/phase3_progan_dct', mode='multi')
  return common.variant(config, arg)
