"""Base config (every field any phase may override lives here) and the builders that every phase
file calls, so that a phase file is one call with typed, checked arguments.

Fields set from the command line must be scalars or tuples (ml_collections cannot parse lists).
"""
import os

import ml_collections

SYNTHETIC_SOURCES = ('tconv', 'nearest', 'bilinear', 'pixelshuffle')
GANFP_SOURCES = ('sngan', 'progan', 'mmdgan', 'cramergan')
FACESHQ_SOURCES = ('stylegan2', 'stylegan_tpdne')
PHASE2_MODES = ('jpeg', 'crop')  # ':jpeg' / ':crop': phase II on one augmentation (Tables 1, 3)


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = 'common'              # default workdir: runs/<name>
  config.seed = 2021
  config.phase = 1                    # 1 detect clean, 2 detect augmented, 3 heads clean, 4 heads augmented
  # Quickstart-style chains: a tuple of config files run in order into workdir/<phase name>.
  config.chain = ()
  # What the run learns: detection (real vs fake), attribution (one-vs-rest per source in
  # `sources`: the paper's heads, or a baseline on one source) or multiclass (real + `sources`,
  # softmax; baselines).
  config.task = 'detection'
  config.sources = ()                 # fake sources the task targets, by name (heads: one each)

  config.data = ml_collections.ConfigDict()
  config.data.name = 'synthetic_fingerprints'
  config.data.config = 'default'      # TFDS builder config
  config.data.data_dir = os.environ.get('TFDS_DATA_DIR', 'data/tfds')  # TFDS's convention
  config.data.train_mode = 'clean'    # clean | multi | blur | crop | jpeg | noise
  config.data.release_blur_sigma = False  # True: the release's fixed sigma 4 (its bug)
  config.data.noise_variance = False  # True: the paper's "variance U(5,20)"; False: the release's std
  # Sources left out of the training and validation splits (open set: a generator no run has
  # seen, not even as a negative); the test splits keep them.
  config.data.exclude_sources = ()
  # grain worker processes that decode and augment (0: threads in the training process). On a GPU
  # the augmented pipeline needs several to keep up (benchmarks/input_pipeline.py).
  config.data.workers = 0
  # Where training batches are augmented (docs/data_path.md): 'host' (CPU workers, above),
  # 'device' (the split held in memory, every draw and operation jitted on the accelerator), or
  # 'auto': the device on a GPU/TPU, the host on a CPU (where the device path is faster but its
  # figures are not yet shown equal: docs/data_path.md). A run records the path it resolved to. Validation and test sets are
  # drawn on the host either way.
  config.data.augment_on = 'auto'
  # device path: the training split is held in device memory up to this size (GiB), else in host
  # memory and streamed (GANFP at 128 px: ~4.6 GiB).
  config.data.device_cache_gb = 8.0
  # On content-matched data (the built-in data: each real crop and its reconstructions), shuffle
  # each crop's images as one block so training batches contrast a crop with its own fakes.
  config.data.group_by_content = True
  # Share of the real training and validation images blurred by a random Gaussian (sigma 0.4-2.5
  # px; gta_jax/data/augment.py `soften`) before any perturbation; test splits never. 0: the paper.
  # The built-in fakes are softer than their inputs, and without it the detector learnt "soft =
  # fake" (docs/research/2026-12-02-softness-shortcut.md).
  config.data.real_softening = 0.0
  # Share of the training and validation images (real and fake, one draw per content group)
  # given a random saturation, contrast, brightness and gamma (gta_jax/data/augment.py
  # `photometric_jitter`); test splits never. 0: the paper.
  config.data.photometric_jitter = 0.0

  config.model = ml_collections.ConfigDict()
  # Model family (gta_jax/families/): primary (phases I/II) | heads (III/IV, on a frozen primary)
  # | gandct | postpool (baselines, from scratch).
  config.model.family = 'primary'
  config.model.input = 'pixel'        # pixel | dct
  # Keras's BatchNorm momentum. Its moving statistics need a few hundred steps to settle; runs
  # with few steps per epoch (the built-in data) use a lower value.
  config.model.bn_momentum = 0.99
  # > 0: before each validation, BatchNorm's inference statistics are recomputed as the equal
  # average over this many training batches under the current weights ("precise BatchNorm"),
  # replacing the moving average. 0: Keras's moving average alone (the release).
  config.model.bn_recalibration_batches = 0
  # How convolutions are lowered (gta_jax/models/convolution.py): auto = the CPU-tuned form on CPU,
  # lax.conv elsewhere; cpu | lax force one. Same outputs and gradients, different speed.
  config.model.conv_impl = 'auto'
  config.model.dnadet_width = 64      # the DNA-Det baseline's first width (the release's)

  config.init = ml_collections.ConfigDict()
  # Lineage: an earlier run by name (e.g. 'phase1_synthetic': a folder beside this run's workdir,
  # in the runs root, runs/ by default) or by path (anything with a '/', e.g. ./model.h5).
  config.init.from_run = ''           # continue from this run's best weights (phases II and IV)
  config.init.primary = ''            # frozen primary for heads: a phase-II run, bundle or .h5

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 1e-3   # 1e-3 detection, 1e-4 attribution (the release)
  # constant (the release) | cosine: from learning_rate to 0 over max_epochs (gta_jax/train.py).
  # Measured on the built-in data: docs/research/2026-12-04-cosine-schedule-detector.md.
  config.optim.schedule = 'constant'
  config.optim.batch_size = 256
  config.optim.max_epochs = 100
  config.optim.patience = 5           # early stopping on validation loss
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.eps = 1e-7             # Keras's Adam epsilon
  # Weight of a real image in the detector's loss (1: the release). The built-in data has 4 fakes
  # per real image; 4 makes both classes weigh the same (gta_jax/families/losses.py).
  config.optim.real_class_weight = 1.0
  # Share of each batch's positives (the detector's fakes, a head's own images) with the highest
  # loss left out of the loss (0: the release). Images whose perturbations erased the fingerprint
  # then no longer teach "degraded = positive" (losses.sigmoid_bce_hardest_positives_dropped).
  config.optim.drop_hardest_positives = 0.0
  # Decay of a moving average of the weights that validation, early stopping and export use
  # (0: none, the release; gta_jax/optim.py). Pair it with model.bn_recalibration_batches,
  # which recomputes the BatchNorm statistics under the averaged weights.
  config.optim.weight_average_decay = 0.0
  # Weight of a head's own-source (positive) images in the heads' loss (1: the release). On the
  # built-in data each head sees 1 own image per 4 others (real + 3 sources); 4 balances them,
  # 2 (its default there) weighs recall against precision at that prior.
  config.optim.head_positive_weight = 1.0

  # Attribution training recipe (heads in phase III, and the DNA-Det baseline): the paper's by
  # default. The others aim at the generator's architecture rather than its weights (DNA-Det,
  # GTA-Net; docs/architecture_attribution.md).
  config.recipe = ml_collections.ConfigDict()
  config.recipe.patches = 0            # > 0: random windows per image, one loss each (0: whole image)
  config.recipe.patch_size = 64        # window side in input pixels (a multiple of 8)
  config.recipe.contrastive = False    # + supervised contrastive loss on projected head features
  config.recipe.contrastive_weighting = 'learned'  # learned (DNA-Det's automatic weights) | fixed
  config.recipe.contrastive_weight = 1.0  # its weight when fixed
  config.recipe.temperature = 0.07
  config.recipe.projection_features = 128
  # Auxiliary frequency maps concatenated with the frozen mid features for the heads (pixel
  # models): any of 'phase' (phase-only spectrum), 'highpass' (residual), 'dct' (4x4-block
  # log-DCT); gta_jax/models/frequency.py. Stored in the model bundle, which attribute reads.
  config.recipe.frequency_inputs = ()
  # > 0: pre-train the heads' convs for that many steps on classifying image transformations of
  # the real training images (JPEG, blur, resize, noise) before phase III (DNA-Det; gta_jax/families/pretrain.py).
  config.recipe.pretrain_steps = 0

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 256
  config.eval.threshold = 0.5         # an output claims at p >= threshold (gta_jax/scoring/verdicts.py)

  # Evaluators (gta_jax/evaluators/): name -> its type and options. They run in name order (as
  # ConfigDict lists its keys); each entry is named after the split it reads.
  config.evals = ml_collections.ConfigDict()
  config.evals.test = ml_collections.ConfigDict(dict(
      type='test_sets', split='test', modes=('clean', 'multi', 'jpeg', 'crop'),
      external_split='test_external'))
  config.evals.test_cross_seed = ml_collections.ConfigDict(dict(type='cross_seed',
                                                                split='test_cross_seed'))
  # Shortcut probe: the test split's real images softened (gta_jax/evaluators/softened_reals.py).
  config.evals.test_softened_reals = ml_collections.ConfigDict(dict(type='softened_reals',
                                                                    split='test'))

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
  config.optim.max_epochs = 2
  config.model.bn_momentum = 0.9
  config.optim.patience = 2
  config.eval.batch_size = 32
  config.evals.test.modes = ('clean', 'jpeg')
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


# ----------------------------------------------------------------------------- datasets


def use_builtin(config, phase: int):
  """The built-in data (3,000 training images, 93 steps per epoch): small batches, BatchNorm
  statistics recomputed before each validation (a moving average over so few steps lags the
  weights), and budgets that keep the quickstart within 15 minutes on 2 CPU cores. The evidence
  for each choice below: docs/research/ (its index names the note)."""
  config.optim.batch_size = 32
  config.model.bn_momentum = 0.9
  config.model.bn_recalibration_batches = 50
  config.optim.real_class_weight = 4.0
  config.data.real_softening = 0.5
  # The bundled photos have few palettes and no grey-scale one; jitter widens them
  # (docs/research/2026-12-03-photometric-jitter.md).
  config.data.photometric_jitter = 0.5
  config.optim.max_epochs = 6
  config.optim.patience = 2
  if phase == 2:
    # Phase II continues phase I at a tenth of its rate: at 1e-3 the augmented retraining
    # reshaped the middle features the heads are built on.
    config.optim.learning_rate = 1e-4
    # At most one perturbation per image, p 1/5 each of none / blur / crop / JPEG / noise (not the
    # paper's `multi`, which stacks them; docs/research/2026-12-03-one-perturbation-per-image.md).
    config.data.train_mode = 'one'
    # The quarter of each batch's fakes the detector finds hardest (mostly those a perturbation
    # stripped of their fingerprint) is left out of the loss, so that "degraded" no longer teaches
    # "fake" (docs/research/2026-12-05-phase2-loss-truncation.md).
    config.optim.drop_hardest_positives = 0.25
  if phase == 4:
    # Phase IV likewise at most one perturbation per image (same note).
    config.data.train_mode = 'one'
  if phase >= 3:
    # A head's own images weigh 2 to 1 against the 4 other sources' (1 : 4 in the data): between
    # the release's 1 (heads claim few of their own images) and the balancing 4 (they claim other
    # sources' too; docs/research/2026-12-04-head-positive-weight.md).
    config.optim.head_positive_weight = 2.0
    config.optim.learning_rate = 1e-3
    # Phase III up to 10 epochs, phase IV 6 (docs/research/2026-12-05-phase4-six-epochs.md).
    config.optim.max_epochs, config.optim.patience = (10, 3) if phase == 3 else (6, 3)
  return config


def use_ganfp(config, phase: int):
  """GANFP as the release trains on it: 128 px, batch 256, patience 5, at most 100 epochs."""
  del phase
  config.data.name = 'ganfp'
  config.optim.batch_size = 256
  config.optim.patience = 5
  config.optim.max_epochs = 100
  return config


def use_faceshq_plus(config, phase: int):
  """FacesHQ+ as the release: 256 px, batch 128, patience 10."""
  del phase
  config.data.name = 'faceshq_plus'
  config.optim.batch_size = 128
  config.optim.patience = 10
  config.optim.max_epochs = 100
  return config


DATASETS = {'synthetic': use_builtin, 'ganfp': use_ganfp, 'faceshq': use_faceshq_plus}


def _dataset_config(dataset: str, phase: int, input_kind: str):
  if dataset not in DATASETS:
    raise ValueError(f'dataset={dataset!r}: choose one of {", ".join(DATASETS)}.')
  if input_kind not in ('pixel', 'dct'):
    raise ValueError(f'input_kind={input_kind!r}: choose pixel or dct.')
  config = DATASETS[dataset](get_config(), phase)
  config.phase = phase
  config.model.input = input_kind
  return config


def _suffix(name: str, input_kind: str) -> str:
  return f'{name}_dct' if input_kind == 'dct' else name


# ----------------------------------------------------------------------------- phases


def augmented_mode(config) -> str:
  """Phases II and IV: the paper's `multi` unless the dataset's settings chose another (the
  built-in data: `one`)."""
  return config.data.train_mode if config.data.train_mode != 'clean' else 'multi'


def detector_phase(arg: str, *, dataset: str, phase: int, input_kind: str = 'pixel'):
  """Phase I (clean images) or II (augmented, on from phase I's best weights) of the primary.

  Phase II trains on `multi` (blur/crop/JPEG/noise, p=0.5 each; the built-in data: `one`, at
  most one of them per image) or, with ':jpeg' / ':crop', on one augmentation applied to half of
  the images.
  """
  if phase not in (1, 2):
    raise ValueError(f'detector phase={phase!r}: 1 (clean) or 2 (augmented).')
  tokens = variant_tokens(arg, PHASE2_MODES if phase == 2 else ())
  config = _dataset_config(dataset, phase, input_kind)
  config.model.family, config.task = 'primary', 'detection'
  name = _suffix(dataset, input_kind)
  config.name = f'phase{phase}_{name}'
  if phase == 2:
    mode = next((t for t in PHASE2_MODES if t in tokens), None)
    config.data.train_mode = mode or augmented_mode(config)
    config.name += f'_{mode}' if mode else ''
    config.init.from_run = f'phase1_{name}'
  return variant(config, arg, PHASE2_MODES if phase == 2 else ())


def heads_phase(arg: str, *, dataset: str, phase: int, sources: tuple[str, ...], target: str = '',
                input_kind: str = 'pixel', patience: int | None = None):
  """Phase III (heads on clean images, on the frozen phase-II primary) or IV (the phase-III heads
  retrained on augmented images: `multi`; the built-in data `one`). `target` names the run
  (default: the dataset).

  Phase III takes ':jpeg' / ':crop' (Table 3): heads trained on that augmentation, on the phase-II
  primary of the same augmentation. `patience` overrides the dataset's early stopping (the paper
  relaxes it to 20 epochs for CramerGAN).
  """
  if phase not in (3, 4):
    raise ValueError(f'heads phase={phase!r}: 3 (clean) or 4 (augmented).')
  if not sources or not all(isinstance(s, str) for s in sources):
    raise ValueError(f'sources={sources!r}: name at least one source, e.g. ("progan",).')
  modes = PHASE2_MODES if phase == 3 else ()
  tokens = variant_tokens(arg, modes)
  config = _dataset_config(dataset, phase, input_kind)
  config.model.family, config.task, config.sources = 'heads', 'attribution', tuple(sources)
  if dataset != 'synthetic':
    config.optim.learning_rate = 1e-4
  if patience is not None:
    config.optim.patience = patience
  run = _suffix(target or dataset, input_kind)
  mode = next((t for t in modes if t in tokens), '')
  config.name = f'phase{phase}_{run}' + (f'_{mode}' if mode else '')
  if phase == 3:
    primary = f'phase2_{_suffix(dataset, input_kind)}'
    config.init.primary = primary + (f'_{mode}' if mode else '')
    config.data.train_mode = mode or 'clean'
  else:  # the primary phase III was built on
    config.data.train_mode = augmented_mode(config)
    config.init.from_run = f'phase3_{run}'
  return variant(config, arg, modes)
