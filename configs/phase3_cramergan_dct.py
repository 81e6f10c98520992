"""Phase III, GANFP, DCT input: a CramerGAN head on the frozen phase-II primary.

python launch.py --config=configs/phase3_cramergan_dct.py
"""
from configs import common


def get_config(arg: str = ''):
  # The paper relaxes early stopping to 20 epochs for CramerGAN.
  return common.heads_phase(arg, dataset='ganfp', phase=3, sources=('cramergan',),
                            target='cramergan', input_kind='dct', patience=20)
