"""Phase III, FacesHQ+: StyleGAN2 and StyleGAN (TPDNE) heads on the frozen phase-II primary.

python launch.py --config=configs/phase3_faceshq.py
"""
from configs import common


def get_config(arg: str = ''):
  config = common.use_faceshq_plus(common.get_config())
  common.heads_phase(config, 3, 'phase3_faceshq', ('stylegan2', 'stylegan_tpdne'),
                     primary_run='runs/phase2_faceshq')
  return common.variant(config, arg)
