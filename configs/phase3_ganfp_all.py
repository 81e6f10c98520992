"""Phase III, GANFP: all four heads (SNGAN, ProGAN, MMDGAN, CramerGAN) trained together.

python launch.py --config=configs/phase3_ganfp_all.py
"""
from configs import common


def get_config(arg: str = ''):
  config = common.use_ganfp(common.get_config())
  common.heads_phase(config, 3, 'phase3_ganfp_all', ('sngan', 'progan', 'mmdgan', 'cramergan'),
                     primary_run='runs/phase2_ganfp')
  return common.variant(config, arg)
