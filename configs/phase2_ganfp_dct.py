"""Phase II, GANFP, DCT input: retrain the DCT primary on augmented images.

python launch.py --config=configs/phase2_ganfp_dct.py[:jpeg|:crop]
"""
from configs import common


def get_config(arg: str = ''):
  return common.detector_phase(arg, dataset='ganfp', phase=2, input_kind='dct')
