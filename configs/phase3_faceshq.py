"""Phase III, FacesHQ+: StyleGAN2 and StyleGAN (TPDNE) heads on the frozen phase-II primary.

python launch.py --config=configs/phase3_faceshq.py
"""
from configs import common


def get_config(arg: str = ''):
  return common.heads_phase(arg, dataset='faceshq', phase=3, sources=common.FACESHQ_SOURCES)
