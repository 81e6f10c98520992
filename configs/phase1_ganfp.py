"""Phase I, GANFP, pixel input: the primary detector on clean images.

python -m gta_jax.prepare --dataset ganfp --manual-dir /data/ganfp
python launch.py --config=configs/phase1_ganfp.py
"""
from configs import common


def get_config(arg: str = ''):
  return common.detector_phase(arg, dataset='ganfp', phase=1)
