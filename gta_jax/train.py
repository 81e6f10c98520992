"""The training loop: resume, epochs, early stopping, checkpoints, logging calls, export.

Start-up order (logged): resume this workdir's latest checkpoint, else initialise from a named run
(phase II from phase I, phase IV from phase III), else from scratch. Everything model-specific
(modules, frozen constants, steps, label view, export) comes from the run's model family
(gta_jax/families/); evaluation from the evaluators of config.evals (gta_jax/evaluators/).
"""
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from ml_collections.config_flags import config_path

from gta_jax import augment
from gta_jax import averaging
from gta_jax import chains
from gta_jax import checkpoints
from gta_jax import convolution
from gta_jax import data
from gta_jax import distributed
from gta_jax import errors
from gta_jax import evaluators
from gta_jax import families
from gta_jax import frequency
from gta_jax import input_pipeline
from gta_jax import openset
from gta_jax import provenance
from gta_jax import run_records
from gta_jax import verdicts
from gta_jax.writers import MetricWriter, fmt, log


SCHEDULES = ('constant', 'cosine')


def learning_rate_schedule(config, total_steps: int):
  """The rate per step: constant, as the release, or a cosine from it to 0 over the run's budget
  (config.optim.max_epochs epochs), so the weights a run ends with are not the last large step's."""
  rate = config.optim.learning_rate
  if config.optim.schedule == 'constant':
    return rate
  return optax.cosine_decay_schedule(rate, decay_steps=max(int(total_steps), 1), alpha=0.0)


def make_optimizer(config, total_steps: int = 0) -> optax.GradientTransformation:
  """Adam with Keras's defaults (beta 0.9/0.999, eps 1e-7) at config.optim.schedule's rate over
  `total_steps` (the run's budget); with config.optim.weight_average_decay, also a moving average
  of the weights (averaging.py)."""
  adam = optax.adam(learning_rate_schedule(config, total_steps), config.optim.b1, config.optim.b2,
                    config.optim.eps)
  decay = config.optim.weight_average_decay
  return optax.chain(adam, averaging.track_average(decay)) if decay else adam


def evaluated_state(state):
  """What validation, early stopping and export see: the averaged weights where the optimizer
  keeps an average, else the weights as trained."""
  average = averaging.averaged_params(state.opt_state)
  return state if average is None else state.replace(params=average)


def thresholds(config) -> verdicts.Thresholds:
  return verdicts.Thresholds(config.eval.threshold, config.eval.threshold)


def check_config(config) -> None:
  """Refuses values that cannot work before anything is created, naming the key."""
  def value_of(key: str):
    return config_path.get_value(key, config)

  def require(ok: bool, key: str, what: str):
    if not ok:
      raise errors.ConfigError(f'config.{key}={value_of(key)!r}: {what}.')

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
  require(config.optim.schedule in SCHEDULES, 'optim.schedule', f'choose {" or ".join(SCHEDULES)}')
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
  for key in ('real_softening', 'real_sharpening', 'photometric_jitter'):
    require(isinstance(config.data[key], (int, float)) and 0 <= config.data[key] <= 1,
            f'data.{key}', 'must be a share from 0 to 1')
  require(isinstance(config.data.random_orientation, bool), 'data.random_orientation',
          'must be True or False')
  require(config.data.train_mode in augment.MODES, 'data.train_mode',
          f'choose one of {", ".join(augment.MODES)}')
  require(config.phase in (1, 2, 3, 4), 'phase', 'choose 1, 2, 3 or 4')
  require(config.model.family in families.FAMILIES, 'model.family',
          f'choose one of {", ".join(families.FAMILIES)}')
  try:
    convolution.resolve_impl(config.model.conv_impl)
  except ValueError as error:
    raise errors.ConfigError(f'config.model.conv_impl: {error}') from None


def setup(config, workdir=None) -> tuple[data.Dataset, families.Family]:
  """Opens the run's dataset and builds its model family (checking `workdir`'s records)."""
  check_config(config)
  dataset = data.open_dataset(config.data, config.model.input)
  return dataset, families.build(config, dataset, workdir)


def initial_tracker(num_outputs: int) -> dict:
  return {'best_loss': np.full(num_outputs, np.inf),
          'best_epoch': np.full(num_outputs, -1, np.int32),
          'bad_epochs': np.zeros(num_outputs, np.int32), 'active': np.ones(num_outputs, bool),
          'epoch': np.zeros((), np.int32)}


def update_early_stopping(tracker: dict, best: dict, state, val_loss, epoch: int, patience: int,
                          stacked_outputs: bool):
  """Keeps each output's best weights and stops it after `patience` epochs without improvement."""
  tracker = jax.tree.map(np.array, tracker)
  improved = (val_loss < tracker['best_loss']) & tracker['active']
  tracker['best_loss'] = np.where(improved, val_loss, tracker['best_loss'])
  tracker['best_epoch'] = np.where(improved, epoch, tracker['best_epoch'])
  tracker['bad_epochs'] = np.where(improved, 0, tracker['bad_epochs'] + tracker['active'])
  tracker['active'] = tracker['active'] & (tracker['bad_epochs'] < patience)
  tracker['epoch'] = np.asarray(epoch + 1, np.int32)
  current = host_variables(state)
  if stacked_outputs:
    best = jax.device_get(families.base.select_outputs(jnp.asarray(improved), current, best))
  elif improved[0]:
    best = current
  return best, tracker


def host_variables(state) -> dict:
  """A host copy of the trained variables: survives the donation of `state` to the next step."""
  return distributed.to_host({'params': state.params, 'batch_stats': state.batch_stats})


def validation_loss(loss_step, family, variables, constants, dataset, batch_size: int,
                    mode: str):
  """Mean validation loss per output ([O]) over every image of the validation split, augmented
  in the training `mode` with a fixed draw: the family's jitted loss step, the training loss on
  logits with BatchNorm in inference mode."""
  total, count = np.zeros(family.num_outputs), 0
  for batch in dataset.batches('validation', batch_size, mode=mode,
                               seed=input_pipeline.VALIDATION_SEED):
    loss = loss_step(variables, constants, data.to_device(batch),
                     data.to_device(family.targets(batch), batch_axis=-1))
    images = int(distributed.gather_rows(batch['mask']).sum())
    total += np.asarray(distributed.to_host(loss), np.float64) * images
    count += images
  return total / max(count, 1)


def recalibrated(family, stats_step, state, constants, dataset, config, epoch: int, active):
  """`state` with BatchNorm statistics averaged over config.model.bn_recalibration_batches
  training batches, drawn as the epoch's training batches (same mode, shuffle and grouping, a
  seed of their own), see families.base.recalibrate_batch_norm."""
  count = min(config.model.bn_recalibration_batches,
              dataset.steps_per_epoch(config.optim.batch_size))
  batches = dataset.batches('train', config.optim.batch_size, mode=config.data.train_mode,
                            seed=input_pipeline.BN_RECALIBRATION_SEED + config.seed, epoch=epoch,
                            shuffle=True, drop_remainder=True)
  device_batches = (data.to_device(b) for _, b in zip(range(count), batches))
  stats = families.base.recalibrate_batch_norm(
      stats_step, {'params': state.params, 'batch_stats': state.batch_stats}, constants,
      device_batches, active if family.stacked_outputs else None)
  return state.replace(batch_stats=stats)


def warm_start(family, config, state, optimizer):
  """Phase II / IV: start from the best weights of the named earlier run (fresh optimizer)."""
  source = pathlib.Path(config.init.from_run)
  if not checkpoints.is_model_bundle(source / 'model'):
    raise errors.MissingRunError(
        f'config.init.from_run={str(source)!r} holds no finished run (no model/model.json). '
        + run_records.missing_run_hint(source, config, config.phase - 1))
  spec, variables, _ = checkpoints.load_model_bundle(source / 'model')
  run_records.check_lineage(config, family.dataset.image_size, source, spec,
                            'config.init.from_run')
  if spec.arch != family.arch:
    raise errors.ConfigError(f'config.init.from_run={str(source)!r} holds a {spec.arch} model '
                             f'but config.model.family={config.model.family!r}.')
  chosen = jax.tree.map(jnp.asarray, family.variables_from_bundle(spec, variables, source))
  log(f'initialised from {source}/model')
  return families.TrainState(state.step, chosen['params'], chosen['batch_stats'],
                             optimizer.init(chosen['params']))


def export(family, config, workdir: pathlib.Path, best: dict, step: int, tracker: dict):
  """Writes the best weights as a model bundle (workdir/model) that attribute and later phases use
  -> (its spec, its variables)."""
  spec = checkpoints.ModelSpec(
      input_kind=config.model.input, image_size=family.dataset.image_size,
      head_names=family.sources, source=str(workdir), arch=family.arch, task=config.task,
      trained_steps=int(step), best_epochs=tuple(int(e) + 1 for e in tracker['best_epoch']),
      thresholds=thresholds(config).to_json(), head_frequency_inputs=family.head_frequency_inputs)
  dct = family.dataset.dct_stats if config.model.input == 'dct' else None
  variables = family.bundle_variables(jax.tree.map(np.asarray, best))
  return checkpoints.save_model_bundle(workdir / 'model', spec, variables, dct), variables


def evaluate(config, family, variables: dict, predictions_dir=None) -> dict:
  """Every evaluator of config.evals on `variables` (what the family trains) -> nested metrics."""
  distributed.check_batch_size(config.eval.batch_size, 'eval.batch_size')
  predict_step = family.make_predict_step()
  constants = distributed.replicate(family.constants())
  variables = distributed.replicate(variables)
  built = evaluators.build(
      config.evals, lambda images: predict_step(variables, constants, images), family.dataset,
      outputs=family.outputs(), thresholds=thresholds(config), batch_size=config.eval.batch_size,
      predictions_dir=predictions_dir)
  return evaluators.run_all(built)


def check_workdir(workdir: pathlib.Path) -> None:
  """Creates the workdir, or says why it cannot (before the dataset is opened or a step taken)."""
  if workdir.exists() and not workdir.is_dir():
    raise errors.ConfigError(f'workdir {workdir} exists and is not a folder.')
  errors.check_writable_folder(workdir, 'workdir')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
  """Trains one phase into `workdir` (resuming if it holds a checkpoint) and evaluates it."""
  workdir = pathlib.Path(workdir)
  if config.chain:
    return chains.run_chain(config, workdir, train_and_evaluate)
  results_file = workdir / 'results' / 'metrics.json'
  if results_file.is_file():
    log(f'{workdir} has finished already; nothing to do (delete it to retrain).')
    return json.loads(results_file.read_text())
  check_config(config)
  warm_started = bool(config.init.from_run) and config.phase in (2, 4)
  if config.model.freeze_batch_norm and not warm_started:
    raise errors.ConfigError(
        'config.model.freeze_batch_norm=True keeps the BatchNorm statistics a run starts from: '
        'it fine-tunes a finished run (phase II from phase I, IV from III, config.init.from_run); '
        f'this run (phase {config.phase}, init.from_run={config.init.from_run!r}) starts from '
        'scratch and has none.')
  distributed.check_batch_size(config.optim.batch_size, 'optim.batch_size')
  distributed.check_batch_size(config.eval.batch_size, 'eval.batch_size')
  check_workdir(workdir)
  manager = checkpoints.training_manager(workdir / 'checkpoints')
  resuming = manager.latest_step() is not None
  if resuming:
    run_records.check_resume_config(workdir, config)
  # A workdir without a checkpoint holds no run yet: what a failed attempt recorded there
  # (config.json, primary.json) is neither checked nor kept.
  dataset, family = setup(config, workdir if resuming else None)

  def write_records():
    if not distributed.is_main_process():
      return
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2) + '\n')
    (workdir / 'provenance.json').write_text(
        json.dumps(provenance.run_provenance(dataset), indent=2) + '\n')
    for name, record in family.records.items():
      (workdir / name).write_text(json.dumps(record, indent=2) + '\n')

  batch_size = config.optim.batch_size
  steps_per_epoch = dataset.steps_per_epoch(batch_size)
  if steps_per_epoch == 0:
    raise errors.ConfigError(f'config.optim.batch_size={batch_size} exceeds the training split '
                     f'({dataset.size("train")} images).')
  total_steps = steps_per_epoch * config.optim.max_epochs
  optimizer = make_optimizer(config, total_steps)
  state = family.init_state(jax.random.key(config.seed), optimizer)
  if not resuming and not warm_started:
    state = family.pretrained_state(state, jax.random.key(config.seed), optimizer)
  state = distributed.replicate(state)
  best = host_variables(state)
  tracker = initial_tracker(family.num_outputs)
  if resuming:
    restored = checkpoints.restore_training(
        manager, {'state': state, 'best': best, 'tracker': tracker}, warn=log)
    state, best = restored['state'], restored['best']
    tracker = jax.tree.map(np.asarray, restored['tracker'])
  elif warm_started:
    state = distributed.replicate(warm_start(family, config, state, optimizer))
    best = host_variables(state)
  else:
    log('initialised from scratch')
  step = int(distributed.to_host(state.step))
  if resuming:
    log(f'resumed {workdir} at step {step}, {int(tracker["epoch"])} epoch(s) validated')
  log(f'{distributed.num_devices()} device(s), {jax.process_count()} process(es): batches of '
      f'{config.optim.batch_size} split along the mesh\'s data axis')

  # Lines logged after the checkpoint we resume from are logged again; drop the earlier copies.
  writer = MetricWriter(workdir, resume_step=step,
                        validated_epochs=int(tracker['epoch']))
  train_step = family.make_train_step(optimizer)
  loss_step = family.make_loss_step()
  # Frozen BatchNorm keeps the statistics of the run it fine-tunes: nothing to recalibrate.
  recalibrates = config.model.bn_recalibration_batches and not config.model.freeze_batch_norm
  stats_step = family.make_batch_stats_step() if recalibrates else None
  constants = distributed.replicate(family.constants())
  started, start_step = time.time(), step

  records_written = resuming and (workdir / 'config.json').is_file()

  def save(force=False, replace=False):
    nonlocal records_written
    checkpoints.save_training(manager, step, {'state': state, 'best': best, 'tracker': tracker},
                              force, replace)
    if not records_written:  # with the first checkpoint: the run now exists
      write_records()
      records_written = True

  try:
    # From the first epoch not yet validated: a run stopped after an epoch's last step but before
    # its validation was saved (Ctrl-C or kill during validation, or the periodic checkpoint of
    # that very step) trains no batch of it again, validates it, and goes on as if never stopped.
    for epoch in range(int(tracker['epoch']), config.optim.max_epochs):
      if not tracker['active'].any():
        break
      batches = dataset.batches('train', batch_size, mode=config.data.train_mode,
                                seed=config.seed, epoch=epoch, shuffle=True, drop_remainder=True,
                                start_batch=step - epoch * steps_per_epoch)
      active = distributed.replicate(np.asarray(tracker['active']))
      for device_batch, targets in data.prefetch_to_device(batches, family.targets):
        state, step_metrics = train_step(state, constants, device_batch, targets, active)
        step += 1
        if step % config.log_every_steps == 0:
          host = distributed.to_host(step_metrics)
          if not np.all(np.isfinite(host['loss'])):
            raise errors.TrainingDiverged(f'loss became {host["loss"]} at step {step}; stopping. '
                                     'Lower config.optim.learning_rate or check the inputs.')
          rate = (step - start_step) / max(time.time() - started, 1e-9)
          eta = (total_steps - step) / max(rate, 1e-9)
          log(f'step {step}/{total_steps} epoch {epoch + 1} loss {fmt(host["loss"])} '
              f'acc {fmt(host["accuracy"])} {rate:.2f} steps/s ETA<= {eta / 60:.1f} min')
          writer.scalars(step, {f'train/loss_{i}': v for i, v in enumerate(host['loss'])})
        if step % config.checkpoint_every_steps == 0:
          save()
      evaluated = evaluated_state(state)
      if stats_step is not None:
        evaluated = recalibrated(family, stats_step, evaluated, constants, dataset, config, epoch,
                                 active)
      state = state.replace(batch_stats=evaluated.batch_stats)  # inference statistics only
      val_loss = validation_loss(loss_step, family,
                                 {'params': evaluated.params, 'batch_stats': evaluated.batch_stats},
                                 constants, dataset, config.eval.batch_size,
                                 config.data.train_mode)
      best, tracker = update_early_stopping(tracker, best, evaluated, val_loss, epoch,
                                            config.optim.patience, family.stacked_outputs)
      writer.scalars(step, {f'val/loss_{i}': v for i, v in enumerate(val_loss)}
                     | {'epoch': epoch + 1})
      log(f'epoch {epoch + 1}: validation loss {fmt(val_loss)}; best epochs '
          f'{(tracker["best_epoch"] + 1).tolist()}; active {tracker["active"].astype(int).tolist()}')
      save(force=True, replace=True)  # the post-validation state, even over a periodic save
  except KeyboardInterrupt:
    save(force=True)
    log(f'interrupted: saved step {step}; run the same command to resume.')
    raise
  finally:
    manager.wait_until_finished()
    writer.close()

  spec, variables = export(family, config, workdir, best, step, tracker)
  if config.model.family == 'heads':  # open-set thresholds from the validation split, in the bundle
    fitted = openset.fit(openset.HeadsRun(workdir, spec, variables, dataset,
                                          tuple(family.source_ids), config.eval.batch_size,
                                          trained_on=dataset))
    log(openset.describe(fitted, family.sources))
  results = evaluate(config, family, best, workdir / 'results' / 'predictions')
  if distributed.is_main_process():
    results_file.parent.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(results, indent=2) + '\n')
    log(f'wrote {results_file}')
  return results
