"""Phase III, GANFP: a ProGAN one-vs-rest head on the frozen phase-II primary.

python launch.py --config=configs/phase3_progan.py
On the built-in data: --config.data.name=synthetic_fingerprints --config.sources="('tconv',)"
"""
from configs import common


def get_config(arg: str = ''):
  return common.heads_phase(arg, dataset='ganfp', phase=3, sources=('progan',), target='progan')
