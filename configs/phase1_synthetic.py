"""Phase I on the built-in data: the primary detector on clean images.

python launch.py --config=configs/phase1_synthetic.py [--workdir=runs/phase1_synthetic]
"""
from configs import common


def get_config(arg: str = ''):
  config = common.get_config()
  config.name = 'phase1_synthetic'
  config.phase = 1
  config.optim.batch_size = 64
  config.optim.max_epochs = 8
  config.optim.patience = 3
  return common.variant(config, arg)
