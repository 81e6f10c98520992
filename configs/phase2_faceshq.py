"""Phase II, FacesHQ+: retrain the phase-I primary on augmented images.

python launch.py --config=configs/phase2_faceshq.py[:jpeg|:crop]
"""
from configs import common


def get_config(arg: str = ''):
  return common.detector_phase(arg, dataset='faceshq', phase=2)
