"""What a run config must hold: the check of every field's value, before anything is created.
configs/common.py defines the fields and their defaults; this says which values can work, naming
the key at fault."""
from ml_collections.config_flags import config_path
import numpy as np

from gta_jax import errors
from gta_jax import families
from gta_jax import optim
from gta_jax.data import augment
from gta_jax.data import device_path
from gta_jax.models import convolution
from gta_jax.models import frequency


def check(config) -> None:
  """Refuses values that cannot work before anything is created, naming the key."""
  def value_of(key: str):
    return config_path.get_value(key, config)

  def require(ok: bool, key: str, what: str):
    if not ok:
      raise errors.ConfigError(f'config.{key}={value_of(key)!r}: {what}.')

  require(isinstance(config.seed, int) and not isinstance(config.seed, bool) and config.seed >= 0,
          'seed', 'must be a whole number >= 0')
  require(isinstance(config.model.bn_recalibration_batches, int)
          and config.model.bn_recalibration_batches >= 0, 'model.bn_recalibration_batches',
          'must be a whole number >= 0')
  for key in ('optim.batch_size', 'eval.batch_size', 'optim.max_epochs', 'optim.patience',
              'log_every_steps', 'checkpoint_every_steps'):
    require(isinstance(value_of(key), int) and value_of(key) >= 1, key,
            'must be a whole number >= 1')
  require(isinstance(config.data.workers, int) and config.data.workers >= 0, 'data.workers',
          'must be a whole number >= 0')
  for key in ('optim.real_class_weight', 'optim.head_positive_weight'):
    require(np.isfinite(value_of(key)) and value_of(key) > 0, key, 'must be a positive number')
  require(isinstance(config.optim.weight_average_decay, (int, float))
          and 0 <= config.optim.weight_average_decay < 1, 'optim.weight_average_decay',
          'must be in [0, 1) (0: no average)')
  require(isinstance(config.optim.drop_hardest_positives, (int, float))
          and 0 <= config.optim.drop_hardest_positives < 1, 'optim.drop_hardest_positives',
          'must be a share in [0, 1)')
  require(np.isfinite(config.optim.learning_rate) and config.optim.learning_rate > 0,
          'optim.learning_rate', 'must be a positive number')
  require(config.optim.schedule in optim.SCHEDULES, 'optim.schedule', f'choose {" or ".join(optim.SCHEDULES)}')
  require(np.isfinite(config.model.bn_momentum) and 0 <= config.model.bn_momentum < 1,
          'model.bn_momentum', 'must be in [0, 1)')
  require(0 < config.eval.threshold < 1, 'eval.threshold', 'must be in (0, 1)')
  require(isinstance(config.recipe.patches, int) and config.recipe.patches >= 0, 'recipe.patches',
          'must be a whole number >= 0')
  require(config.recipe.contrastive_weighting in ('learned', 'fixed'), 'recipe.contrastive_weighting',
          'choose learned or fixed')
  for key in ('recipe.temperature', 'recipe.contrastive_weight'):
    require(np.isfinite(value_of(key)) and value_of(key) > 0, key, 'must be a positive number')
  require(isinstance(config.recipe.pretrain_steps, int) and config.recipe.pretrain_steps >= 0,
          'recipe.pretrain_steps', 'must be a whole number >= 0')
  require(isinstance(config.recipe.projection_features, int) and config.recipe.projection_features >= 1,
          'recipe.projection_features', 'must be a whole number >= 1')
  require(config.model.input in ('pixel', 'dct'), 'model.input', 'choose pixel or dct')
  try:
    frequency.check_names(config.recipe.frequency_inputs)
  except (TypeError, ValueError) as e:
    raise errors.ConfigError(str(e)) from None
  require(not config.recipe.frequency_inputs or config.model.input == 'pixel',
          'recipe.frequency_inputs', 'are maps of the pixels: use them with model.input=pixel')
  for key in ('real_softening', 'photometric_jitter'):
    require(isinstance(config.data[key], (int, float)) and 0 <= config.data[key] <= 1,
            f'data.{key}', 'must be a share from 0 to 1')
  require(config.data.get('augment_on', 'auto') in device_path.AUGMENT_ON, 'data.augment_on',
          f'choose one of {", ".join(device_path.AUGMENT_ON)}')
  require(isinstance(config.data.get('device_cache_gb', 0.0), (int, float))
          and not isinstance(config.data.get('device_cache_gb', 0.0), bool)
          and 0 <= config.data.get('device_cache_gb', 0.0) < float('inf'), 'data.device_cache_gb',
          'must be a number of GiB >= 0 (0: stream from host memory)')
  require(config.data.train_mode in augment.MODES, 'data.train_mode',
          f'choose one of {", ".join(augment.MODES)}')
  require(config.phase in (1, 2, 3, 4), 'phase', 'choose 1, 2, 3 or 4')
  require(config.model.family in families.FAMILIES, 'model.family',
          f'choose one of {", ".join(families.FAMILIES)}')
  try:
    convolution.resolve_impl(config.model.conv_impl)
  except ValueError as error:
    raise errors.ConfigError(f'config.model.conv_impl: {error}') from None
