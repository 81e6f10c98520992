"""Phase III, GANFP: a ProGAN one-vs-rest head on the frozen phase-II primary.

python launch.py --config=configs/phase3_progan.py
On the built-in data: --config.data.name=synthetic_fingerprints --config.heads="('tconv',)"
"""
from configs import common


def get_config(arg: str = ''):
  config = common.use_ganfp(common.get_config())
  common.heads_phase(config, 3, 'phase3_progan', ('progan',), primary_run='runs/phase2_ganfp')
  return common.variant(config, arg)
