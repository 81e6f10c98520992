"""Phase IV, GANFP, DCT input: a CramerGAN head retrained on multi-augmented images (phase IV).

python launch.py --config=configs/phase4_cramergan_dct.py
"""
from configs import common


def get_config(arg: str = ''):
  # The paper relaxes early stopping to 20 epochs for CramerGAN.
  return common.heads_phase(arg, dataset='ganfp', phase=4, sources=('cramergan',),
                            target='cramergan', input_kind='dct', patience=20)
