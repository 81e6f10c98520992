"""Phase IV, GANFP: retrain the phase-III progan head(s) on multi-augmented images.

python launch.py --config=configs/phase4_progan.py
"""
from configs import common, phase3_progan


def get_config(arg: str = ''):
  config = phase3_progan.get_config('')
  common.heads_phase(config, 4, 'phase4_progan', config.heads,
                     previous_run='runs/phase3_progan', mode='multi')
  return common.variant(config, arg)
