"""Phase IV, FacesHQ+: retrain the phase-III heads on multi-augmented images.

python launch.py --config=configs/phase4_faceshq.py
"""
from configs import common, phase3_faceshq


def get_config(arg: str = ''):
  config = phase3_faceshq.get_config('')
  common.heads_phase(config, 4, 'phase4_faceshq', config.heads,
                     previous_run='runs/phase3_faceshq', mode='multi')
  return common.variant(config, arg)
