"""Phase I on the built-in data: the primary detector on clean images.

python launch.py --config=configs/phase1_synthetic.py [--workdir=runs/phase1_synthetic]
"""
from configs import common


def get_config(arg: str = ''):
  return common.detector_phase(arg, dataset='synthetic', phase=1)
