"""Phase II, GANFP, pixel: retrain the phase-I primary on augmented images.

python launch.py --config=configs/phase2_ganfp.py          (multi: blur/crop/jpeg/noise, p=0.5 each)
python launch.py --config=configs/phase2_ganfp.py:jpeg     (JPEG on half of the images)
python launch.py --config=configs/phase2_ganfp.py:crop     (crop on half of the images)
"""
from configs import common


def get_config(arg: str = ''):
  return common.detector_phase(arg, dataset='ganfp', phase=2)
