"""Phase II, GANFP, DCT input: retrain the DCT primary on multi-augmented images.

python launch.py --config=configs/phase2_ganfp_dct.py
"""
from configs import common


def get_config(arg: str = ''):
  config = common.use_ganfp(common.get_config(), 'dct')
  common.detection_phase(config, 2, 'phase2_ganfp_dct', 'runs/phase1_ganfp_dct', 'multi')
  return common.variant(config, arg)
