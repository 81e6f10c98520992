"""Phase I on the built-in data: the primary detector on clean images.

python launch.py --config=configs/phase1_synthetic.py [--workdir=runs/phase1_synthetic]
"""
from configs import common


def get_config(arg: str = ''):
  config = common.get_config()
  config.name = 'phase1_synthetic'
  config.phase = 1
  # 3,000 training images: small batches and a faster BatchNorm average give the moving
  # statistics enough steps to settle (GANFP's 390 steps per epoch need neither).
  config.optim.batch_size = 32
  config.model.bn_momentum = 0.9
  config.optim.max_epochs = 6
  config.optim.patience = 2
  return common.variant(config, arg)
