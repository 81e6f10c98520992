"""Phase II on the built-in data: retrain the phase-I primary on multi-augmented images.

python launch.py --config=configs/phase2_synthetic.py --config.init.from_run=runs/phase1_synthetic
"""
from configs import common


def get_config(arg: str = ''):
  return common.detector_phase(arg, dataset='synthetic', phase=2)
