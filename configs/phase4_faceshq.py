"""Phase IV, FacesHQ+: StyleGAN2 and StyleGAN (TPDNE) heads retrained on multi-augmented images (phase IV).

python launch.py --config=configs/phase4_faceshq.py
"""
from configs import common


def get_config(arg: str = ''):
  return common.heads_phase(arg, dataset='faceshq', phase=4, sources=common.FACESHQ_SOURCES)
