"""Phase II on the built-in data: retrain the phase-I primary on perturbed images (at most one
perturbation per image, `one`; the paper stacks them, `multi`: --config.data.train_mode=multi).

python launch.py --config=configs/phase2_synthetic.py   (on runs/phase1_synthetic, beside its workdir)
"""
from configs import common


def get_config(arg: str = ''):
  return common.detector_phase(arg, dataset='synthetic', phase=2)
