"""Training phases I-IV: jitted pure steps, a frozen shared primary, K heads trained together.

Start-up order (logged): resume this workdir's latest checkpoint, else initialise from a named
run (phase II from phase I, phase IV from phase III), else from scratch. Heads (phases III/IV)
train on a primary that is loaded read-only, run with BatchNorm in inference mode under
stop_gradient; the run records which primary (path, digest) it was built on and refuses another.
"""
import dataclasses
import functools
import importlib.util
import json
import pathlib
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from gta_jax import checkpoints
from gta_jax import convolution
from gta_jax import input_pipeline
from gta_jax import keras_import
from gta_jax import metrics as metrics_lib
from gta_jax import models
from gta_jax import spectral


# ----------------------------------------------------------------------------- pure pieces


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def make_optimizer(config) -> optax.GradientTransformation:
  """Adam with Keras's defaults (beta 0.9/0.999, eps 1e-7) at a constant rate, as the release."""
  return optax.adam(config.optim.learning_rate, config.optim.b1, config.optim.b2, config.optim.eps)


def preprocess(images: jax.Array, input_kind: str, dct_mean, dct_std) -> jax.Array:
  """[B, H, W, 3] uint8 -> model input, on the device inside the step."""
  if input_kind == 'dct':
    return spectral.dct_features(images, dct_mean, dct_std)
  return spectral.scale_pixels(images)


def masked_bce(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean binary cross-entropy on logits over the last axis, ignoring padded examples."""
  losses = optax.sigmoid_binary_cross_entropy(logits, targets)
  return (losses * mask).sum(-1) / jnp.maximum(mask.sum(), 1)


def detection_train_step(state: TrainState, batch: dict, dct_stats, *, gap: bool, input_kind: str,
                         optimizer, bn_momentum: float = models.BN_MOMENTUM,
                         conv_impl: str = 'auto'):
  """One Adam step of the primary on real(0)/fake(1) labels; BatchNorm statistics updated."""
  x = preprocess(batch['image'], input_kind, *dct_stats)

  def loss_fn(params):
    out, updates = models.Primary(gap, bn_momentum, conv_impl).apply(
        {'params': params, 'batch_stats': state.batch_stats}, x, train=True,
        mutable=['batch_stats'])
    return masked_bce(out.logit, batch['label'].astype(jnp.float32), batch['mask']), (out, updates)

  (loss, (out, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  changes, opt_state = optimizer.update(grads, state.opt_state, state.params)
  accuracy = _masked_mean((out.logit >= 0) == (batch['label'] == 1), batch['mask'])
  new_state = TrainState(state.step + 1, optax.apply_updates(state.params, changes),
                         updates['batch_stats'], opt_state)
  return new_state, {'loss': loss[None], 'accuracy': accuracy[None]}


def heads_train_step(state: TrainState, primary_variables, batch: dict, targets: jax.Array,
                     active: jax.Array, dct_stats, *, gap: bool, input_kind: str, optimizer,
                     bn_momentum: float = models.BN_MOMENTUM, conv_impl: str = 'auto'):
  """One step of all K heads on frozen primary features; stopped heads (active=0) stay put.

  targets: [K, B] one-vs-rest labels. Each head's loss depends only on its own slice of the
  stacked parameters, so summing the K losses trains K independent heads at once.
  """
  x = preprocess(batch['image'], input_kind, *dct_stats)
  primary = models.Primary(gap, conv_impl=conv_impl).apply(primary_variables, x, train=False)
  mid = jax.lax.stop_gradient(primary.mid_features)
  num_heads = targets.shape[0]

  def loss_fn(params):
    out, updates = models.StackedHeads(num_heads, gap, bn_momentum, conv_impl=conv_impl).apply(
        {'params': params, 'batch_stats': state.batch_stats}, mid, train=True,
        mutable=['batch_stats'])
    per_head = masked_bce(out.logit, targets, batch['mask'][None, :])
    return per_head.sum(), (per_head, out, updates)

  (_, (per_head, out, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  changes, opt_state = optimizer.update(grads, state.opt_state, state.params)
  keep = lambda new, old: _select_heads(active, new, old)
  params = keep(optax.apply_updates(state.params, changes), state.params)
  batch_stats = keep(updates['batch_stats'], state.batch_stats)
  opt_state = keep(opt_state, state.opt_state)
  accuracy = _masked_mean((out.logit >= 0) == (targets == 1), batch['mask'][None, :], axis=-1)
  return TrainState(state.step + 1, params, batch_stats, opt_state), {
      'loss': per_head, 'accuracy': accuracy}


def baseline_train_step(state: TrainState, batch: dict, targets: jax.Array, dct_stats, *,
                        module, input_kind: str, optimizer):
  """One step of a baseline trained from scratch: sigmoid BCE (binary) or softmax CE (multiclass).

  targets: [B] float 0/1 (binary) or int class index (multiclass).
  """
  x = preprocess(batch['image'], input_kind, *dct_stats)

  def loss_fn(params):
    logits = module.apply({'params': params}, x, train=True)
    if logits.ndim == 1:
      return masked_bce(logits, targets, batch['mask']), logits >= 0
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return (losses * batch['mask']).sum() / jnp.maximum(batch['mask'].sum(), 1), logits.argmax(-1)

  (loss, predicted), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  changes, opt_state = optimizer.update(grads, state.opt_state, state.params)
  accuracy = _masked_mean(predicted == targets, batch['mask'])
  return TrainState(state.step + 1, optax.apply_updates(state.params, changes), state.batch_stats,
                    opt_state), {'loss': loss[None], 'accuracy': accuracy[None]}


def baseline_predict_step(variables, unused, images, dct_stats, *, module, input_kind: str,
                          task: str):
  """-> (p_fake [B], p_heads [K, B]) for what a baseline outputs (NaN where it has no output)."""
  del unused
  logits = module.apply(variables, preprocess(images, input_kind, *dct_stats))
  if task == 'multiclass':
    probs = jax.nn.softmax(logits, axis=-1)
    return 1 - probs[:, 0], probs[:, 1:].T
  probs = jax.nn.sigmoid(logits)
  if task == 'attribution':
    return jnp.full_like(probs, jnp.nan), probs[None]
  return probs, jnp.zeros((0, probs.shape[0]))


def _select_heads(active: jax.Array, new, old):
  """Per-head choice between two trees whose leaves carry a leading head axis (scalars: new)."""
  def pick(a, b):
    if a.ndim == 0 or a.shape[0] != active.shape[0]:
      return a
    return jnp.where(active.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
  return jax.tree.map(pick, new, old)


def _masked_mean(values, mask, axis=None):
  values = values.astype(jnp.float32) * mask
  return values.sum(axis=axis) / jnp.maximum(mask.sum(), 1)


def predict_step(primary_variables, head_variables, images, dct_stats, *, gap: bool,
                 input_kind: str, num_heads: int, conv_impl: str = 'auto'):
  """-> (p_fake [B], p_heads [K, B]) in inference mode."""
  x = preprocess(images, input_kind, *dct_stats)
  variables = {'primary': primary_variables}
  if num_heads:
    variables['heads'] = head_variables
  out = models.predict(variables, x, gap=gap, num_heads=num_heads, conv_impl=conv_impl)
  p_heads = jax.nn.sigmoid(out.heads.logit) if num_heads else jnp.zeros((0, x.shape[0]))
  return jax.nn.sigmoid(out.primary.logit), p_heads


# ----------------------------------------------------------------------------- run set-up


@dataclasses.dataclass
class Run:
  """Everything a training run resolved at start-up (host side)."""
  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  builder: Any
  image_size: int
  source_ids: dict
  head_ids: tuple
  dct_stats: tuple
  primary_variables: Any = None  # frozen primary (heads runs)
  primary_record: dict | None = None

  @property
  def is_baseline(self) -> bool:
    return self.config.model.arch != 'proposed'

  @property
  def is_heads(self) -> bool:
    """The proposed model's secondary heads on a frozen primary (phases III/IV)."""
    return bool(self.config.heads) and not self.is_baseline

  @property
  def task(self) -> str:
    """detection | heads | attribution (baseline one-vs-rest) | multiclass (baseline)."""
    if self.is_baseline:
      return self.config.task
    return 'heads' if self.config.heads else 'detection'

  @property
  def baseline_module(self):
    num_classes = 1 + len(self.config.heads) if self.task == 'multiclass' else 1
    module_class = {'gandct': models.GanDctConv, 'postpool': models.GanfpPostpool}.get(
        self.config.model.arch)
    if module_class is None:
      raise ValueError(f'config.model.arch={self.config.model.arch!r}: choose proposed, gandct '
                       'or postpool.')
    return module_class(num_classes, conv_impl=self.config.model.conv_impl)

  def baseline_targets(self, batch) -> np.ndarray:
    if self.task == 'attribution':
      return (batch['source_id'] == self.head_ids[0]).astype(np.float32)
    if self.task == 'multiclass':
      classes = np.asarray((0,) + self.head_ids)
      return np.argmax(batch['source_id'][:, None] == classes[None, :], axis=1).astype(np.int32)
    return batch['label'].astype(np.float32)

  @property
  def gap(self) -> bool:
    return self.config.model.input == 'pixel'


def log(message: str) -> None:
  print(f'[gta_jax {time.strftime("%H:%M:%S")}] {message}', flush=True)


def dct_statistics(builder, batch_size: int = 256):
  """Per-coefficient mean/std of the clean training split (Welford), cached beside the dataset."""
  cache = pathlib.Path(builder.data_dir) / 'dct_stats'
  if (cache / 'mean.npy').is_file():
    return spectral.load_dct_stats(cache)
  log(f'computing DCT statistics over the training split -> {cache}')
  stats = spectral.DctStats()
  source = input_pipeline.data_source(builder, 'train')
  for batch in input_pipeline.batches(source, batch_size, seed=0, shuffle=False,
                                      drop_remainder=False):
    images = batch['image'][batch['mask']]
    stats.update(spectral.log_dct_numpy(images))
  stats.save(cache)
  return stats.mean, stats.std


def load_primary(reference: str, run_hint: str):
  """A phase-II workdir, model bundle or release .h5 -> (variables, record {path, digest})."""
  path = pathlib.Path(reference)
  loaded = keras_import.load_any(path) if reference else None
  if loaded is None:
    raise FileNotFoundError(
        f'config.init.primary={reference!r}: no trained primary there. Run {run_hint} first, '
        'or point --config.init.primary at a phase-II workdir, a model bundle or a release .h5.')
  spec, variables, _ = loaded
  primary = variables['primary']
  return primary, {'path': str(path.absolute()), 'digest': checkpoints.tree_digest(primary),
                   'input_kind': spec.input_kind, 'source': spec.source,
                   'trained_steps': spec.trained_steps, 'best_epoch': list(spec.best_epochs)}


def setup_run(config, workdir) -> Run:
  workdir = pathlib.Path(workdir)
  builder = input_pipeline.load_builder(config.data.name, config.data.config, config.data.data_dir)
  source_ids = dict(builder.info.metadata['source_ids'])
  unknown = [h for h in config.heads if h not in source_ids]
  if unknown:
    raise KeyError(f'config.heads: unknown source(s) {", ".join(unknown)} for '
                   f'{config.data.name}; choose from {", ".join(s for s in source_ids if s != "real")}.')
  first = input_pipeline.data_source(builder, 'train')[0]
  image_size = int(first['image'].shape[0])
  if config.model.input == 'dct':
    mean, std = dct_statistics(builder)
    dct_stats = (np.asarray(mean, np.float32), np.asarray(std, np.float32))
  else:
    dct_stats = (np.zeros((), np.float32), np.ones((), np.float32))
  run = Run(config, workdir, builder, image_size, source_ids,
            tuple(source_ids[h] for h in config.heads), dct_stats)
  try:
    convolution.resolve_impl(config.model.conv_impl)
  except ValueError as error:
    raise ValueError(f'config.model.conv_impl: {error}') from None
  if run.is_baseline:
    if config.task not in ('detection', 'attribution', 'multiclass'):
      raise ValueError(f'config.task={config.task!r}: choose detection, attribution or multiclass.')
    if config.task == 'attribution' and len(config.heads) != 1:
      raise ValueError('a one-vs-rest baseline needs exactly one source in config.heads, '
                       f'got {config.heads}.')
    if config.task == 'multiclass' and not config.heads:
      raise ValueError('a multiclass baseline needs its fake classes in config.heads.')
    run.baseline_module  # noqa: B018  (validates config.model.arch early)
  if run.is_heads:
    _attach_primary(run)
  return run


def _attach_primary(run: Run) -> None:
  """Loads the frozen primary and checks it is the one this workdir was built on."""
  config = run.config
  reference = config.init.primary
  if not reference and config.init.from_run:
    recorded = pathlib.Path(config.init.from_run) / 'primary.json'
    if not recorded.is_file():
      raise FileNotFoundError(f'config.init.from_run={config.init.from_run!r} has no primary.json: '
                              'run its phase-III config first.')
    reference = json.loads(recorded.read_text())['path']
  hint = 'the phase-II config (e.g. configs/phase2_synthetic.py)'
  run.primary_variables, run.primary_record = load_primary(reference, hint)
  if run.primary_record['input_kind'] != config.model.input:
    raise ValueError(f'primary {reference} takes {run.primary_record["input_kind"]} input but '
                     f'config.model.input={config.model.input!r}.')
  record_file = run.workdir / 'primary.json'
  if record_file.is_file():
    built_on = json.loads(record_file.read_text())
    if built_on['digest'] != run.primary_record['digest']:
      raise ValueError(
          f'{run.workdir} was trained on the primary {built_on["path"]} (digest '
          f'{built_on["digest"][:12]}), but {reference} holds different weights '
          f'({run.primary_record["digest"][:12]}). Use a new workdir for a new primary.')


# ----------------------------------------------------------------------------- state


def init_state(run: Run, optimizer) -> TrainState:
  key = jax.random.key(run.config.seed)
  if run.is_baseline:
    channels = 1 if run.config.model.input == 'dct' else 3
    params = models.init_variables(run.baseline_module, key,
                                   (1, run.image_size, run.image_size, channels))['params']
    return TrainState(jnp.zeros((), jnp.int32), params, {}, optimizer.init(params))
  if run.is_heads:
    size = -(-run.image_size // 4)
    variables = models.init_variables(models.StackedHeads(len(run.config.heads), run.gap), key,
                                      (1, size, size, 16))
  else:
    channels = 1 if run.config.model.input == 'dct' else 3
    variables = models.init_variables(models.Primary(run.gap), key,
                                      (1, run.image_size, run.image_size, channels))
  return TrainState(jnp.zeros((), jnp.int32), variables['params'], variables['batch_stats'],
                    optimizer.init(variables['params']))


def initial_tracker(num: int) -> dict:
  return {'best_loss': np.full(num, np.inf), 'best_epoch': np.full(num, -1, np.int32),
          'bad_epochs': np.zeros(num, np.int32), 'active': np.ones(num, bool),
          'epoch': np.zeros((), np.int32)}


def _from_previous_run(run: Run, state: TrainState, optimizer) -> TrainState:
  """Phase II / IV: start from the best weights of the named earlier run (fresh optimizer)."""
  source = pathlib.Path(run.config.init.from_run)
  if not checkpoints.is_model_bundle(source / 'model'):
    raise FileNotFoundError(
        f'config.init.from_run={str(source)!r} holds no finished run (no model/model.json). '
        f'Run the previous phase first, e.g. python launch.py --config=configs/'
        f'phase{run.config.phase - 1}_synthetic.py --workdir={source}')
  spec, variables, _ = checkpoints.load_model_bundle(source / 'model')
  if run.is_heads:
    if tuple(spec.head_names) != tuple(run.config.heads):
      raise ValueError(f'{source} trained heads {spec.head_names}, config.heads is {run.config.heads}.')
    if spec.primary_digest != run.primary_record['digest']:
      raise ValueError(f'{source} was trained on a different primary than {run.primary_record["path"]}.')
    chosen = variables['heads']
  else:
    chosen = variables['primary']
  chosen = jax.tree.map(jnp.asarray, chosen)
  log(f'initialised from {source}/model')
  return TrainState(state.step, chosen['params'], chosen['batch_stats'],
                    optimizer.init(chosen['params']))


def _checkpoint_tree(state: TrainState, best: dict, tracker: dict) -> dict:
  return {'state': state, 'best': best, 'tracker': tracker}


# ----------------------------------------------------------------------------- loops


def evaluate_loss(run: Run, state_or_best, source, batch_size: int):
  """Validation loss per head ([K]) or of the primary ([1]), over every image."""
  predict = _predict_fn(run)
  totals, count = None, 0
  for batch in input_pipeline.batches(source, batch_size, seed=0, shuffle=False,
                                      drop_remainder=False):
    primary_vars, head_vars = _split_variables(run, state_or_best)
    p_fake, p_heads = predict(primary_vars, head_vars, batch['image'], run.dct_stats)
    if run.task == 'multiclass':  # cross-entropy of the true class
      probs = np.concatenate([1 - np.asarray(p_fake)[None], np.asarray(p_heads)])
      true = np.take_along_axis(probs, run.baseline_targets(batch)[None], axis=0)
      losses = -np.log(np.clip(true, 1e-7, 1)) * batch['mask'][None]
      totals = losses.sum(-1) if totals is None else totals + losses.sum(-1)
      count += int(batch['mask'].sum())
      continue
    if run.is_heads or run.task == 'attribution':
      targets = (input_pipeline.head_targets(batch['source_id'], run.head_ids) if run.is_heads
                 else run.baseline_targets(batch)[None])
      probs = np.asarray(p_heads)
    else:
      targets = batch['label'][None].astype(np.float32)
      probs = np.asarray(p_fake)[None]
    probs = np.clip(probs, 1e-7, 1 - 1e-7)
    losses = -(targets * np.log(probs) + (1 - targets) * np.log(1 - probs))
    losses = (losses * batch['mask'][None]).sum(-1)
    totals = losses if totals is None else totals + losses
    count += int(batch['mask'].sum())
  return totals / max(count, 1)


def _split_variables(run: Run, variables: dict):
  """A {'params', 'batch_stats'} tree being trained -> (primary / baseline vars, head vars)."""
  if run.is_heads:
    return run.primary_variables, variables
  if run.is_baseline:
    return {'params': variables['params']}, None
  return variables, None


@functools.lru_cache(maxsize=None)
def _jitted_predict(gap: bool, input_kind: str, num_heads: int, conv_impl: str):
  return jax.jit(functools.partial(predict_step, gap=gap, input_kind=input_kind,
                                   num_heads=num_heads, conv_impl=conv_impl))


@functools.lru_cache(maxsize=None)
def _jitted_baseline_predict(module, input_kind: str, task: str):
  return jax.jit(functools.partial(baseline_predict_step, module=module, input_kind=input_kind,
                                   task=task))


def _predict_fn(run: Run):
  if run.is_baseline:
    return _jitted_baseline_predict(run.baseline_module, run.config.model.input, run.task)
  return _jitted_predict(run.gap, run.config.model.input, len(run.config.heads),
                         run.config.model.conv_impl)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
  """Trains one phase into `workdir` (resuming if it holds a checkpoint) and evaluates it."""
  workdir = pathlib.Path(workdir)
  if config.chain:
    return run_chain(config, workdir)
  results_file = workdir / 'results' / 'metrics.json'
  if results_file.is_file():
    log(f'{workdir} has finished already; nothing to do (delete it to retrain).')
    return json.loads(results_file.read_text())
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2) + '\n')
  run = setup_run(config, workdir)
  if run.is_heads:
    (workdir / 'primary.json').write_text(json.dumps(run.primary_record, indent=2) + '\n')

  optimizer = make_optimizer(config)
  num_outputs = max(len(config.heads), 1)
  state = init_state(run, optimizer)
  best = _host_variables(state)
  tracker = initial_tracker(num_outputs)
  manager = ocp.CheckpointManager(
      (workdir / 'checkpoints').absolute(),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
  if manager.latest_step() is not None:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                            _checkpoint_tree(state, best, tracker))
    restored = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(abstract))
    state, best, tracker = restored['state'], restored['best'], restored['tracker']
    tracker = jax.tree.map(np.asarray, tracker)
    log(f'resumed {workdir} at step {int(state.step)}')
  elif config.init.from_run and (config.phase in (2, 4)):
    state = _from_previous_run(run, state, optimizer)
    best = _host_variables(state)
  else:
    log('initialised from scratch')

  train_source = input_pipeline.data_source(run.builder, 'train')
  val_source = input_pipeline.data_source(run.builder, 'validation')
  batch_size = config.optim.batch_size
  steps_per_epoch = input_pipeline.num_batches(train_source, batch_size, drop_remainder=True)
  if steps_per_epoch == 0:
    raise ValueError(f'config.optim.batch_size={batch_size} exceeds the training split '
                     f'({len(train_source)} images).')
  writer = _Writer(workdir)
  step_fn = _make_step(run, optimizer)
  step = int(state.step)
  started, start_step = time.time(), step
  total_steps = steps_per_epoch * config.optim.max_epochs
  try:
    for epoch in range(step // steps_per_epoch, config.optim.max_epochs):
      if not tracker['active'].any():
        break
      start_batch = step - epoch * steps_per_epoch
      for batch in input_pipeline.batches(
          train_source, batch_size, seed=config.seed, epoch=epoch, mode=config.data.train_mode,
          start_batch=start_batch, release_blur_sigma=config.data.release_blur_sigma):
        state, step_metrics = step_fn(state, batch, tracker['active'])
        step += 1
        if step % config.log_every_steps == 0:
          host = jax.device_get(step_metrics)
          if not np.all(np.isfinite(host['loss'])):
            raise FloatingPointError(f'loss became {host["loss"]} at step {step}; stopping. '
                                     'Lower config.optim.learning_rate or check the inputs.')
          rate = (step - start_step) / max(time.time() - started, 1e-9)
          eta = (total_steps - step) / max(rate, 1e-9)
          log(f'step {step}/{total_steps} epoch {epoch + 1} loss {_fmt(host["loss"])} '
              f'acc {_fmt(host["accuracy"])} {rate:.2f} steps/s ETA<= {eta / 60:.1f} min')
          writer.scalars(step, {f'train/loss_{i}': v for i, v in enumerate(host['loss'])})
        if step % config.checkpoint_every_steps == 0:
          _save(manager, step, state, best, tracker)
      val_loss = evaluate_loss(run, {'params': state.params, 'batch_stats': state.batch_stats},
                               val_source, config.eval.batch_size)
      best, tracker = update_early_stopping(tracker, best, state, val_loss, epoch,
                                            config.optim.patience, run.is_heads)
      writer.scalars(step, {f'val/loss_{i}': v for i, v in enumerate(val_loss)}
                     | {'epoch': epoch + 1})
      log(f'epoch {epoch + 1}: validation loss {_fmt(val_loss)}; best epochs '
          f'{(tracker["best_epoch"] + 1).tolist()}; active {tracker["active"].astype(int).tolist()}')
      _save(manager, step, state, best, tracker, force=True)
  except KeyboardInterrupt:
    _save(manager, step, state, best, tracker, force=True)
    log(f'interrupted: saved step {step}; run the same command to resume.')
    raise
  finally:
    manager.wait_until_finished()
    writer.close()

  export_best(run, best, step, tracker)
  results = evaluate(run, best)
  results_file.parent.mkdir(parents=True, exist_ok=True)
  results_file.write_text(json.dumps(results, indent=2) + '\n')
  log(f'wrote {results_file}')
  return results


def update_early_stopping(tracker: dict, best: dict, state: TrainState, val_loss, epoch: int,
                          patience: int, per_head: bool):
  """Keeps each output's best weights and stops it after `patience` epochs without improvement."""
  tracker = jax.tree.map(np.array, tracker)
  improved = (val_loss < tracker['best_loss']) & tracker['active']
  tracker['best_loss'] = np.where(improved, val_loss, tracker['best_loss'])
  tracker['best_epoch'] = np.where(improved, epoch, tracker['best_epoch'])
  tracker['bad_epochs'] = np.where(improved, 0, tracker['bad_epochs'] + tracker['active'])
  tracker['active'] = tracker['active'] & (tracker['bad_epochs'] < patience)
  tracker['epoch'] = np.asarray(epoch + 1, np.int32)
  current = _host_variables(state)
  if per_head:
    best = jax.device_get(_select_heads(jnp.asarray(improved), current, best))
  elif improved[0]:
    best = current
  return best, tracker


def _host_variables(state: TrainState) -> dict:
  """A host copy of the trained variables: survives the donation of `state` to the next step."""
  return jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})


def _make_step(run: Run, optimizer):
  if run.is_baseline:
    step = jax.jit(functools.partial(baseline_train_step, module=run.baseline_module,
                                     input_kind=run.config.model.input, optimizer=optimizer),
                   donate_argnums=0)
    return lambda state, batch, active: step(state, batch, run.baseline_targets(batch),
                                             run.dct_stats)
  common = dict(gap=run.gap, input_kind=run.config.model.input, optimizer=optimizer,
                bn_momentum=run.config.model.bn_momentum, conv_impl=run.config.model.conv_impl)
  if run.is_heads:
    step = jax.jit(functools.partial(heads_train_step, **common), donate_argnums=0)
    head_ids = run.head_ids
    return lambda state, batch, active: step(
        state, run.primary_variables, batch, input_pipeline.head_targets(batch['source_id'], head_ids),
        jnp.asarray(active), run.dct_stats)
  step = jax.jit(functools.partial(detection_train_step, **common), donate_argnums=0)
  return lambda state, batch, active: step(state, batch, run.dct_stats)


def _save(manager, step, state, best, tracker, force=False):
  if manager.latest_step() == step:
    return
  # Host copies: the next step donates (deletes) the device buffers an async save would read.
  tree = jax.device_get(_checkpoint_tree(state, best, tracker))
  manager.save(step, args=ocp.args.StandardSave(tree), force=force)


def _fmt(values) -> str:
  return ' '.join(f'{float(v):.4f}' for v in np.atleast_1d(values))


class _Writer:
  """TensorBoard event files (tensorboardX) plus one JSON line per logged step."""

  def __init__(self, workdir: pathlib.Path):
    from tensorboardX import SummaryWriter
    self._tb = SummaryWriter(str(workdir / 'tensorboard'))
    self._lines = open(workdir / 'metrics.jsonl', 'a')

  def scalars(self, step: int, values: dict) -> None:
    values = {k: float(v) for k, v in values.items()}
    for key, value in values.items():
      self._tb.add_scalar(key, value, step)
    self._lines.write(json.dumps({'step': step, **values}) + '\n')
    self._lines.flush()

  def close(self) -> None:
    self._tb.close()
    self._lines.close()


def export_best(run: Run, best: dict, step: int, tracker: dict) -> None:
  """Writes the best weights as a model bundle (workdir/model) that attribute and later phases use."""
  best = jax.tree.map(np.asarray, best)
  if run.is_heads:
    variables = {'primary': run.primary_variables, 'heads': best}
  elif run.is_baseline:
    variables = {'primary': {'params': best['params']}}
  else:
    variables = {'primary': best}
  spec = checkpoints.ModelSpec(input_kind=run.config.model.input, image_size=run.image_size,
                               head_names=tuple(run.config.heads), source=str(run.workdir),
                               arch=run.config.model.arch, task=run.task, trained_steps=int(step),
                               best_epochs=tuple(int(e) + 1 for e in tracker['best_epoch']))
  dct = run.dct_stats if run.config.model.input == 'dct' else None
  checkpoints.save_model_bundle(run.workdir / 'model', spec, variables, dct)


# ----------------------------------------------------------------------------- evaluation


def score_split(run: Run, best: dict, source, mode: str, seed: int):
  """Scores every image of a split (no dropped last batch) -> dict of host arrays."""
  predict = _predict_fn(run)
  primary_vars, head_vars = _split_variables(run, jax.tree.map(jnp.asarray, best))
  out = {'p_fake': [], 'p_heads': [], 'label': [], 'source_id': []}
  for batch in input_pipeline.batches(source, run.config.eval.batch_size, seed=seed, mode=mode,
                                      shuffle=False, drop_remainder=False):
    p_fake, p_heads = jax.device_get(predict(primary_vars, head_vars, batch['image'], run.dct_stats))
    keep = batch['mask']
    out['p_fake'].append(p_fake[keep])
    out['p_heads'].append(p_heads[:, keep])
    out['label'].append(batch['label'][keep])
    out['source_id'].append(batch['source_id'][keep])
  return {k: np.concatenate(v, axis=-1) for k, v in out.items()}


def evaluate(run: Run, best: dict, test_sets=None) -> dict:
  """Metrics on the test split under each test-set perturbation, plus external/cross-seed sets.

  Raw scores go to workdir/results/predictions/<test set>.npz (for curves and re-analysis).
  """
  results = {}
  splits = run.builder.info.splits
  predictions_dir = run.workdir / 'results' / 'predictions'
  predictions_dir.mkdir(parents=True, exist_ok=True)
  for mode in test_sets or run.config.eval.test_sets:
    if mode not in input_pipeline.TEST_SET_SEEDS:
      raise ValueError(f'unknown test set {mode!r}; choose from '
                       f'{", ".join(input_pipeline.TEST_SET_SEEDS)}.')
    scores = score_split(run, best, input_pipeline.data_source(run.builder, 'test'), mode,
                         input_pipeline.TEST_SET_SEEDS[mode])
    np.savez(predictions_dir / f'{mode}.npz', **scores)
    results[mode] = metrics_for(run, scores)
    if 'test_external' in splits:
      external = score_split(run, best, input_pipeline.data_source(run.builder, 'test_external'),
                             mode, input_pipeline.TEST_SET_SEEDS[mode])
      if 'detection' in results[mode]:
        results[mode]['detection']['external_accuracy'] = float(
            np.mean(external['p_fake'] >= 0.5))
      for k, name in enumerate(run.config.heads):
        results[mode]['heads'][name]['external_accuracy'] = float(
            np.mean(external['p_heads'][k] < 0.5))
    detection = results[mode].get('detection')
    parts = [f'detection acc {detection["accuracy"]:.4f}'] if detection else []
    parts += [f'{name} F1 {m["f1"]:.3f}' for name, m in results[mode]['heads'].items()]
    log(f'test[{mode}]: ' + ', '.join(parts))
  if run.config.heads and 'test_cross_seed' in splits:
    scores = score_split(run, best, input_pipeline.data_source(run.builder, 'test_cross_seed'),
                         'clean', 0)
    results['cross_seed'] = {name: {'recall': float(np.mean(
        scores['p_heads'][k][scores['source_id'] == run.head_ids[k]] >= 0.5))}
        for k, name in enumerate(run.config.heads)}
  return results


def metrics_for(run: Run, scores: dict) -> dict:
  """detection / per-head / multiclass metrics, for what the model outputs."""
  result = {'heads': {}}
  if run.task != 'attribution':  # a one-vs-rest baseline does no detection
    result['detection'] = metrics_lib.binary_metrics(scores['label'], scores['p_fake'])
  for k, name in enumerate(run.config.heads):
    positives = scores['source_id'] == run.head_ids[k]
    head = metrics_lib.binary_metrics(positives, scores['p_heads'][k])
    if run.is_heads:
      head['self_contradiction'] = metrics_lib.self_contradiction(scores['p_fake'],
                                                                  scores['p_heads'][k])
    result['heads'][name] = head
  if run.task == 'multiclass':  # the baseline's softmax: highest class wins
    classes = np.asarray((0,) + tuple(run.head_ids))
    probs = np.concatenate([1 - scores['p_fake'][None], scores['p_heads']])
    predicted = classes[probs.argmax(axis=0)]
    result['multiclass'] = {
        'accuracy': float(np.mean(predicted == scores['source_id'])),
        'classes': classes.tolist(),
        'confusion_matrix': metrics_lib.confusion_matrix(scores['source_id'], predicted,
                                                         classes.tolist()).tolist()}
  if run.is_heads:
    predicted = metrics_lib.multiclass_predictions(scores['p_heads'], run.head_ids)
    claims = (scores['p_heads'] >= 0.5).sum(0)
    classes = (0,) + tuple(run.head_ids)
    result['multiclass'] = {
        'accuracy': float(np.mean(predicted == np.where(np.isin(scores['source_id'], classes),
                                                        scores['source_id'], -1))),
        'failed_attributions': int(np.sum((scores['label'] == 1) & (claims == 0))),
        'multiple_attributions': int(np.sum(claims > 1)),
        'classes': list(classes),
        'confusion_matrix': metrics_lib.confusion_matrix(scores['source_id'], predicted,
                                                         classes).tolist()}
  return result


# ----------------------------------------------------------------------------- chains


def load_config_file(path: str, arg: str = '') -> ml_collections.ConfigDict:
  """Loads `get_config(arg)` from a config file path, as config_flags does."""
  spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def run_chain(config, workdir: pathlib.Path) -> dict:
  """Runs each config of `config.chain` in order, wiring each phase to the previous one's run."""
  root = pathlib.Path(__file__).resolve().parents[1]
  arg = 'smoke' if config.data.config == 'smoke' else ''
  results = {}
  for path in config.chain:
    phase = load_config_file(str(root / path), arg)
    with phase.unlocked():
      phase.data.name, phase.data.config = config.data.name, config.data.config
      phase.data.data_dir, phase.seed = config.data.data_dir, config.seed
      for field in ('from_run', 'primary'):
        value = phase.init[field]
        if value.startswith('runs/'):
          phase.init[field] = str(workdir / value[len('runs/'):])
    log(f'--- {phase.name} -> {workdir / phase.name}')
    results[phase.name] = train_and_evaluate(phase, workdir / phase.name)
  write_examples(config, workdir / 'examples')
  return results


def write_examples(config, directory: pathlib.Path, per_source: int = 2) -> None:
  """A few test images per source as PNG files, to try `python -m gta_jax.attribute` on."""
  from PIL import Image
  if directory.is_dir():
    return
  builder = input_pipeline.load_builder(config.data.name, config.data.config, config.data.data_dir)
  directory.mkdir(parents=True)
  for split in ('test', 'test_external'):
    if split not in builder.info.splits:
      continue
    source = input_pipeline.data_source(builder, split)
    written: dict[str, int] = {}
    for index in range(len(source)):
      record = source[index]
      name = record['source'].decode() if isinstance(record['source'], bytes) else record['source']
      if written.get(name, 0) < per_source:
        Image.fromarray(record['image']).save(directory / f'{name}_{written.get(name, 0)}.png')
        written[name] = written.get(name, 0) + 1
  log(f'wrote example test images to {directory}')
