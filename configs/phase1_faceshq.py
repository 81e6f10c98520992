"""Phase I, FacesHQ+ (256 px, pixel): the primary detector on clean images.

python -m gta_jax.prepare --dataset faceshq_plus --manual-dir /data/faceshq_plus
python launch.py --config=configs/phase1_faceshq.py
"""
from configs import common


def get_config(arg: str = ''):
  return common.detector_phase(arg, dataset='faceshq', phase=1)
