"""Phase I, FacesHQ+ (256 px, pixel): the primary detector on clean images.

python -m gta_jax.prepare --dataset faceshq_plus --manual-dir /data/faceshq_plus
python launch.py --config=configs/phase1_faceshq.py
"""
from configs import common


def get_config(arg: str = ''):
  config = common.use_faceshq_plus(common.get_config())
  common.detection_phase(config, 1, 'phase1_faceshq')
  return common.variant(config, arg)
