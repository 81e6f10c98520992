"""Phase II on the built-in data: retrain the phase-I primary on multi-augmented images.

python launch.py --config=configs/phase2_synthetic.py --config.init.from_run=runs/phase1_synthetic
"""
from configs import phase1_synthetic


def get_config(arg: str = ''):
  config = phase1_synthetic.get_config(arg)
  config.name = 'phase2_synthetic'
  config.phase = 2
  config.data.train_mode = 'multi'
  config.init.from_run = 'runs/phase1_synthetic'
  return config
