"""Shared by the baseline configs: GANFP detection, one-vs-rest (ProGAN, CramerGAN) or multiclass,
trained from scratch on clean images, or with ':multi' retrained on multi-augmented images from
the clean run's best weights (phase II for detection, IV for attribution, as the proposed model)."""
from configs import common

TASKS = ('progan', 'cramergan', 'multiclass', 'multi')


def baseline_config(arch: str, arg: str, seed: int):
  tokens = common.variant_tokens(arg, TASKS)
  config = common.use_ganfp(common.get_config(), phase=1)
  config.model.family = arch
  config.seed = seed
  config.data.train_mode = 'clean'
  if 'multiclass' in tokens:
    config.task, config.sources, config.name = 'multiclass', common.GANFP_SOURCES, f'{arch}_multiclass'
    config.optim.learning_rate = 1e-3
  elif tokens & {'progan', 'cramergan'}:
    target = next(t for t in ('progan', 'cramergan') if t in tokens)
    config.task, config.sources, config.name = 'attribution', (target,), f'{arch}_{target}'
    config.optim.learning_rate = 1e-4
  else:
    config.task, config.name = 'detection', f'{arch}_detection'
    config.optim.learning_rate = 1e-3
  if 'cramergan' in tokens:
    config.optim.patience = 20  # the paper relaxes early stopping for CramerGAN
  if 'multi' in tokens:
    config.phase = 2 if config.task == 'detection' else 4
    config.data.train_mode = 'multi'
    config.init.from_run = config.name
    config.name += '_multi'
  return common.variant(config, arg, TASKS)
