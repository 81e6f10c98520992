"""Base config: every field any phase may override lives here.

Fields set from the command line must be scalars or tuples (ml_collections cannot parse lists).
"""
import ml_collections

SYNTHETIC_HEADS = ('tconv', 'nearest', 'bilinear', 'pixelshuffle')


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = 'common'              # default workdir: runs/<name>
  config.seed = 2021
  config.phase = 1                    # 1 detect clean, 2 detect augmented, 3 heads clean, 4 heads augmented
  # Quickstart-style chains: a tuple of config files run in order into workdir/<phase name>.
  config.chain = ()

  config.data = ml_collections.ConfigDict()
  config.data.name = 'synthetic_fingerprints'
  config.data.config = 'default'      # TFDS builder config
  config.data.data_dir = 'data/tfds'
  config.data.train_mode = 'clean'    # clean | multi | blur | crop | jpeg | noise
  config.data.release_blur_sigma = False  # True: the release's fixed sigma 4 (its bug)

  config.model = ml_collections.ConfigDict()
  config.model.arch = 'proposed'      # proposed | gandct | postpool
  config.model.input = 'pixel'        # pixel | dct
  # Keras's BatchNorm momentum. Its moving statistics need a few hundred steps to settle; runs
  # with few steps per epoch (the built-in data) use a lower value.
  config.model.bn_momentum = 0.99
  # How convolutions are lowered (gta_jax/convolution.py): auto = the CPU-tuned form on CPU,
  # lax.conv elsewhere; cpu | lax force one. Same outputs and gradients, different speed.
  config.model.conv_impl = 'auto'

  config.heads = ()                   # one-vs-rest heads (phases III/IV), named by source
  # Baselines only (model.arch gandct/postpool): detection, attribution (one-vs-rest on
  # heads[0]) or multiclass (real + the sources in heads, softmax).
  config.task = 'detection'

  config.init = ml_collections.ConfigDict()
  config.init.from_run = ''           # continue from this run's best weights (phases II and IV)
  config.init.primary = ''            # frozen primary for heads: a phase-II workdir, bundle or .h5

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 1e-3   # 1e-3 detection, 1e-4 attribution (the release)
  config.optim.batch_size = 256
  config.optim.max_epochs = 100
  config.optim.patience = 5           # early stopping on validation loss
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.eps = 1e-7             # Keras's Adam epsilon

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 256
  config.eval.test_sets = ('clean', 'multi', 'jpeg', 'crop')

  config.log_every_steps = 20
  config.checkpoint_every_steps = 100
  config.lock()
  return config


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config to seconds on a CPU: the smoke dataset, tiny batches, two epochs.

  On a folder dataset (GANFP, FacesHQ+) it expects the builder's dummy_data prepared as
  '2-1-1' (python -m gta_jax.prepare --dataset ganfp --manual-dir datasets/ganfp/dummy_data
  --config 2-1-1).
  """
  if config.data.name == 'synthetic_fingerprints':
    config.data.config = 'smoke'
    config.optim.batch_size = 16
  else:
    config.data.config = '2-1-1'
    config.optim.batch_size = 4
    config.eval.batch_size = 4
  config.optim.max_epochs = 2
  config.model.bn_momentum = 0.9
  config.optim.patience = 2
  config.eval.batch_size = 32
  config.eval.test_sets = ('clean', 'jpeg')
  config.log_every_steps = 5
  config.checkpoint_every_steps = 5
  return config


def variant_tokens(arg: str | None, allowed=()) -> set[str]:
  """'multiclass,smoke' -> {'multiclass', 'smoke'}; anything not allowed is a clear error."""
  tokens = {t for t in (arg or '').split(',') if t}
  unknown = tokens - set(allowed) - {'smoke'}
  if unknown:
    raise ValueError(f'unknown config argument(s) {", ".join(sorted(unknown))}; this config takes '
                     f'{", ".join(sorted(set(allowed) | {"smoke"}))} (e.g. ":smoke").')
  return tokens


def variant(config, arg: str, allowed=()):
  """Applies the ':smoke' argument every config accepts (after other variant tokens are used)."""
  return smoke(config) if 'smoke' in variant_tokens(arg, allowed) else config


def use_ganfp(config, input_kind: str = 'pixel'):
  """GANFP as the release trains on it: 128 px, batch 256, patience 5, at most 100 epochs."""
  config.data.name = 'ganfp'
  config.data.config = 'default'
  config.model.input = input_kind
  config.optim.batch_size = 256
  config.optim.patience = 5
  config.optim.max_epochs = 100
  return config


def use_faceshq_plus(config):
  """FacesHQ+ as the release: 256 px, batch 128, patience 10."""
  config.data.name = 'faceshq_plus'
  config.data.config = 'default'
  config.optim.batch_size = 128
  config.optim.patience = 10
  config.optim.max_epochs = 100
  return config


def detection_phase(config, phase: int, name: str, previous_run: str = '', mode: str = 'clean'):
  config.name, config.phase = name, phase
  config.data.train_mode = mode
  config.init.from_run = previous_run
  config.optim.learning_rate = 1e-3
  return config


def heads_phase(config, phase: int, name: str, heads, primary_run: str = '',
                previous_run: str = '', mode: str = 'clean'):
  config.name, config.phase, config.heads = name, phase, tuple(heads)
  config.data.train_mode = mode
  config.init.primary, config.init.from_run = primary_run, previous_run
  config.optim.learning_rate = 1e-4
  return config
