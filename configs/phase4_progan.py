"""Phase IV, GANFP: a ProGAN one-vs-rest head retrained on multi-augmented images (phase IV).

python launch.py --config=configs/phase4_progan.py
On the built-in data: --config.data.name=synthetic_fingerprints --config.sources="('tconv',)"
"""
from configs import common


def get_config(arg: str = ''):
  return common.heads_phase(arg, dataset='ganfp', phase=4, sources=('progan',), target='progan')
