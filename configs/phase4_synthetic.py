"""Phase IV on the built-in data: retrain the phase-III heads on multi-augmented images.

python launch.py --config=configs/phase4_synthetic.py --config.init.from_run=runs/phase3_synthetic
"""
from configs import phase3_synthetic


def get_config(arg: str = ''):
  config = phase3_synthetic.get_config(arg)
  config.name = 'phase4_synthetic'
  config.phase = 4
  config.data.train_mode = 'multi'
  config.init.from_run = 'runs/phase3_synthetic'
  config.init.primary = ''  # the primary phase III was built on
  if arg != 'smoke':
    config.optim.max_epochs = 3  # a short augmented fine-tune of the phase-III heads
  return config
