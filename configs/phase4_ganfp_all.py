"""Phase IV, GANFP: retrain the phase-III ganfp_all head(s) on multi-augmented images.

python launch.py --config=configs/phase4_ganfp_all.py
"""
from configs import common, phase3_ganfp_all


def get_config(arg: str = ''):
  config = phase3_ganfp_all.get_config('')
  common.heads_phase(config, 4, 'phase4_ganfp_all', config.heads,
                     previous_run='runs/phase3_ganfp_all', mode='multi')
  return common.variant(config, arg)
