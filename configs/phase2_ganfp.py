"""Phase II, GANFP, pixel: retrain the phase-I primary on augmented images.

python launch.py --config=configs/phase2_ganfp.py          (multi: blur/crop/jpeg/noise, p=0.5 each)
python launch.py --config=configs/phase2_ganfp.py:jpeg     (JPEG on half of the images)
python launch.py --config=configs/phase2_ganfp.py:crop     (crop on half of the images)
"""
from configs import common

MODES = ('jpeg', 'crop')


def get_config(arg: str = ''):
  tokens = common.variant_tokens(arg, MODES)
  mode = next((t for t in MODES if t in tokens), 'multi')
  config = common.use_ganfp(common.get_config())
  suffix = '' if mode == 'multi' else f'_{mode}'
  common.detection_phase(config, 2, f'phase2_ganfp{suffix}', 'runs/phase1_ganfp', mode)
  return common.variant(config, arg, MODES)
