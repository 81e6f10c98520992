"""Phase IV, GANFP: retrain the phase-III cramergan head(s) on multi-augmented images.

python launch.py --config=configs/phase4_cramergan.py
"""
from configs import common, phase3_cramergan


def get_config(arg: str = ''):
  config = phase3_cramergan.get_config('')
  common.heads_phase(config, 4, 'phase4_cramergan', config.heads,
                     previous_run='runs/phase3_cramergan', mode='multi')
  return common.variant(config, arg)
