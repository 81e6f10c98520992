"""Phase I, GANFP, DCT input (log-DCT z-scored with the training split's statistics).

python launch.py --config=configs/phase1_ganfp_dct.py
"""
from configs import common


def get_config(arg: str = ''):
  config = common.use_ganfp(common.get_config(), 'dct')
  common.detection_phase(config, 1, 'phase1_ganfp_dct')
  return common.variant(config, arg)
