"""Phase III, GANFP: a CramerGAN head on the frozen phase-II primary.

python launch.py --config=configs/phase3_cramergan.py
"""
from configs import common


def get_config(arg: str = ''):
  config = common.use_ganfp(common.get_config())
  common.heads_phase(config, 3, 'phase3_cramergan', ('cramergan',), primary_run='runs/phase2_ganfp')
  return common.variant(config, arg)
