"""Phase I, GANFP, DCT input (log-DCT z-scored with the training split's statistics).

python launch.py --config=configs/phase1_ganfp_dct.py
"""
from configs import common


def get_config(arg: str = ''):
  return common.detector_phase(arg, dataset='ganfp', phase=1, input_kind='dct')
