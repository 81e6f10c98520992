"""Phase II, FacesHQ+: retrain the phase-I primary on multi-augmented images.

python launch.py --config=configs/phase2_faceshq.py
"""
from configs import common


def get_config(arg: str = ''):
  config = common.use_faceshq_plus(common.get_config())
  common.detection_phase(config, 2, 'phase2_faceshq', 'runs/phase1_faceshq', 'multi')
  return common.variant(config, arg)
