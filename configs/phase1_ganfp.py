"""Phase I, GANFP, pixel input: the primary detector on clean images.

python -m gta_jax.prepare --dataset ganfp --manual-dir /data/ganfp
python launch.py --config=configs/phase1_ganfp.py
"""
from configs import common


def get_config(arg: str = ''):
  config = common.use_ganfp(common.get_config())
  common.detection_phase(config, 1, 'phase1_ganfp')
  return common.variant(config, arg)
