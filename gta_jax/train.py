"""The training loop: resume, epochs, early stopping, checkpoints, logging calls, export.

Start-up order (logged): resume this workdir's latest checkpoint, else initialise from a named run
(phase II from phase I, phase IV from phase III), else from scratch. Everything model-specific
(modules, frozen constants, steps, label view, export) comes from the run's model family
(gta_jax/families/); evaluation from the evaluators of config.evals (gta_jax/evaluators/).
"""
import dataclasses
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gta_jax import chains
from gta_jax import errors
from gta_jax import evaluation
from gta_jax import families
from gta_jax import optim
from gta_jax import run_config
from gta_jax.data import device_path
from gta_jax.data import loader
from gta_jax.data import pipeline
from gta_jax.io import checkpoints
from gta_jax.io import distributed
from gta_jax.io import progress
from gta_jax.io import provenance
from gta_jax.io import run_records
from gta_jax.io import workdir_lock
from gta_jax.io.writers import fmt
from gta_jax.io.writers import log
from gta_jax.io.writers import MetricWriter
from gta_jax.io.writers import write_json_atomic
from gta_jax.io.writers import write_text_atomic
from gta_jax.models import convolution


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


def remaining_steps(tracker: dict, step: int, epoch: int, steps_per_epoch: int, max_epochs: int,
                    patience: int) -> tuple[int, int]:
  """Training steps left -> (if no output improves on its best validation loss again, so that
  early stopping ends the run at the end of the epoch each active output's patience runs out;
  at most, to config.optim.max_epochs). `epoch` is the one being trained."""
  left = patience - np.asarray(tracker['bad_epochs'])[np.asarray(tracker['active'], bool)]
  epochs_early = min(max_epochs - epoch, int(left.max()) if left.size else 1)
  return ((epoch + epochs_early) * steps_per_epoch - step,
          max_epochs * steps_per_epoch - step)


@jax.jit
def _still_finite(flag, loss, grad_norm):
  return flag & jnp.all(jnp.isfinite(loss)) & jnp.all(jnp.isfinite(grad_norm))


def host_variables(state) -> dict:
  """A host copy of the trained variables: survives the donation of `state` to the next step."""
  return distributed.to_host({'params': state.params, 'batch_stats': state.batch_stats})


def validation_loss(loss_step, family, variables, constants, dataset, batch_size: int,
                    mode: str):
  """Mean validation loss per output ([O]) over every image of the validation split, augmented
  in the training `mode` with a fixed draw: the family's jitted loss step, the training loss on
  logits with BatchNorm in inference mode."""
  total, count = np.zeros(family.num_outputs), 0
  batches = dataset.batches('validation', batch_size, mode=mode, seed=pipeline.VALIDATION_SEED)
  for batch in progress.progress(batches, total=-(-dataset.size('validation') // batch_size),
                                 desc='validation', unit='batches'):
    loss = loss_step(variables, constants, loader.to_device(batch),
                     loader.to_device(family.targets(batch), batch_axis=-1))
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
  batches = dataset.training_batches(config.optim.batch_size, mode=config.data.train_mode,
                                     seed=pipeline.BN_RECALIBRATION_SEED + config.seed,
                                     epoch=epoch, label_view=family.targets)
  device_batches = (batch for _, (batch, _) in zip(range(count), batches))
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
      thresholds=evaluation.thresholds(config).to_json(), head_frequency_inputs=family.head_frequency_inputs)
  dct = family.dct_stats if config.model.input == 'dct' else None
  variables = family.bundle_variables(jax.tree.map(np.asarray, best))
  if spec.head_names and 'heads' in variables:  # each head names its run (and, on save, its digest)
    epochs = (spec.best_epochs if len(spec.best_epochs) == len(spec.head_names)
              else (None,) * len(spec.head_names))
    spec = dataclasses.replace(spec, head_provenance=tuple(
        provenance.head_origin(workdir, step, epoch) for epoch in epochs))
  return checkpoints.save_model_bundle(workdir / 'model', spec, variables, dct), variables


def check_workdir(workdir: pathlib.Path) -> None:
  """Creates the workdir, or says why it cannot (before the dataset is opened or a step taken)."""
  if workdir.exists() and not workdir.is_dir():
    raise errors.ConfigError(f'workdir {workdir} exists and is not a folder.')
  errors.check_writable_folder(workdir, 'workdir')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> dict:
  """Trains one phase into `workdir` (resuming if it holds a checkpoint) and evaluates it, holding
  the workdir's lock throughout (gta_jax/io/workdir_lock.py)."""
  workdir = pathlib.Path(workdir)
  if config.chain:
    return chains.run_chain(config, workdir, train_and_evaluate)
  config = run_records.resolve_lineage(config, workdir)  # run names -> runs beside this one
  # The data path the run trains on is recorded as resolved on this machine ('auto' is the
  # device on an accelerator): a resume elsewhere that would switch paths is refused, naming it.
  config.data.augment_on = device_path.resolve(config.data.get('augment_on', 'auto'))
  results_file = workdir / 'results' / 'metrics.json'
  results = _finished_results(workdir, config, results_file)
  if results is not None:
    return results
  run_config.check(config)
  distributed.check_batch_size(config.optim.batch_size, 'optim.batch_size')
  distributed.check_batch_size(config.eval.batch_size, 'eval.batch_size')
  check_workdir(workdir)
  with workdir_lock.locked(workdir, f'training {config.name}', distributed.is_main_process(),
                           distributed.main_process_says):
    results = _finished_results(workdir, config, results_file)  # another process may have
    if results is not None:                                       # finished it meanwhile
      return results
    return _train_and_evaluate(config, workdir, results_file)


def _finished_results(workdir: pathlib.Path, config, results_file: pathlib.Path) -> dict | None:
  """A finished run's results, once its config is checked to be `config`'s; None if unfinished."""
  results = run_records.read_results(results_file)
  if results is not None:
    run_records.check_resume_config(workdir, config, finished=True)
    log(f'{workdir} has finished already; nothing to do (delete it to retrain).')
  return results


def _train_and_evaluate(config, workdir: pathlib.Path, results_file: pathlib.Path) -> dict:
  warm_started = bool(config.init.from_run) and config.phase in (2, 4)
  manager = checkpoints.training_manager(workdir / 'checkpoints')
  resuming = manager.latest_step() is not None
  if resuming:
    run_records.check_resume_config(workdir, config)
  # A workdir without a checkpoint holds no run yet: what a failed attempt recorded there
  # (config.json, primary.json) is neither checked nor kept.
  dataset, family = evaluation.setup(config, workdir if resuming else None)

  def write_records():
    if not distributed.is_main_process():
      return
    write_text_atomic(workdir / 'config.json', config.to_json_best_effort(indent=2) + '\n')
    write_json_atomic(workdir / 'provenance.json', provenance.run_provenance(dataset))
    for name, record in family.records.items():
      write_json_atomic(workdir / name, record)

  batch_size = config.optim.batch_size
  steps_per_epoch = dataset.steps_per_epoch(batch_size)
  if steps_per_epoch == 0:
    raise errors.ConfigError(f'config.optim.batch_size={batch_size} exceeds the training split '
                     f'({dataset.size("train")} images).')
  total_steps = steps_per_epoch * config.optim.max_epochs
  optimizer = optim.make_optimizer(config, total_steps)
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
  log(convolution.describe(config.model.get('conv_impl', 'auto')))

  # Lines logged after the checkpoint we resume from are logged again; drop the earlier copies.
  writer = MetricWriter(workdir, resume_step=step,
                        validated_epochs=int(tracker['epoch']))
  learning_rate = optim.learning_rate_schedule(config, total_steps)
  if not callable(learning_rate):
    learning_rate = (lambda rate: lambda step: rate)(learning_rate)
  train_step = family.make_train_step(optimizer)
  loss_step = family.make_loss_step()
  stats_step = (family.make_batch_stats_step() if config.model.bn_recalibration_batches
                else None)
  constants = distributed.replicate(family.constants())
  started, start_step = time.time(), step

  records_written = resuming and (workdir / 'config.json').is_file()

  # Every step's loss and gradient norm are checked on the device (one flag, no host transfer per
  # step) and the flag is read before anything is saved, logged or validated: a run that turns
  # NaN between logged steps stops there, its last checkpoint the last finite state.
  finite = distributed.replicate(np.asarray(True))
  last_good = None

  def check_finite():
    nonlocal last_good
    if bool(distributed.to_host(finite)):
      last_good = step
      return
    since = last_good if last_good is not None else start_step
    raise errors.TrainingDiverged(
        f'the training loss or gradients became NaN or infinite between steps {since} and {step}; '
        'stopping before anything else is saved; the last checkpoint holds the last finite '
        'state. Check the inputs, or train with a lower config.optim.learning_rate in a new '
        'workdir (a resume keeps the run\'s settings).')

  def save(force=False, replace=False):
    nonlocal records_written
    check_finite()
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
      batches = dataset.training_batches(batch_size, mode=config.data.train_mode,
                                         seed=config.seed, epoch=epoch,
                                         label_view=family.targets,
                                         start_batch=step - epoch * steps_per_epoch)
      active = distributed.replicate(np.asarray(tracker['active']))
      for device_batch, targets in batches:
        state, step_metrics = train_step(state, constants, device_batch, targets, active)
        finite = _still_finite(finite, step_metrics['loss'], step_metrics['grad_norm'])
        step += 1
        if step % config.log_every_steps == 0:
          check_finite()
          host = distributed.to_host(step_metrics)
          rate = (step - start_step) / max(time.time() - started, 1e-9)
          early, latest = remaining_steps(tracker, step, epoch, steps_per_epoch,
                                          config.optim.max_epochs, config.optim.patience)
          log(f'step {step}/{total_steps} epoch {epoch + 1} loss {fmt(host["loss"])} '
              f'acc {fmt(host["accuracy"])} {rate:.2f} steps/s; ETA {early / rate / 60:.1f} min '
              f'if no output improves again, <= {latest / rate / 60:.1f} min')
          writer.scalars(step, {f'train/loss_{i}': v for i, v in enumerate(host['loss'])}
                         | {'train/grad_norm': host['grad_norm'],
                            'train/learning_rate': float(learning_rate(step - 1))})
          writer.scalars(step, {'train/images_per_s': rate * batch_size}, record=False)
        if step % config.checkpoint_every_steps == 0:
          save()
      check_finite()
      evaluated = optim.evaluated_state(state)
      if stats_step is not None:
        evaluated = recalibrated(family, stats_step, evaluated, constants, dataset, config, epoch,
                                 active)
      state = state.replace(batch_stats=evaluated.batch_stats)  # inference statistics only
      val_loss = validation_loss(loss_step, family,
                                 {'params': evaluated.params, 'batch_stats': evaluated.batch_stats},
                                 constants, dataset, config.eval.batch_size,
                                 config.data.train_mode)
      if not np.all(np.isfinite(val_loss)):
        raise errors.TrainingDiverged(
            f'validation loss {fmt(val_loss)} after epoch {epoch + 1} (step {step}) is not finite; '
            'stopping before this epoch is saved or exported; the last checkpoint holds the '
            'epoch before. Check the validation images, or train with a lower '
            'config.optim.learning_rate in a new workdir (a resume keeps the run\'s settings).')
      best, tracker = update_early_stopping(tracker, best, evaluated, val_loss, epoch,
                                            config.optim.patience, family.stacked_outputs)
      writer.scalars(step, {f'val/loss_{i}': v for i, v in enumerate(val_loss)}
                     | {'epoch': epoch + 1})
      log(f'epoch {epoch + 1}: validation loss {fmt(val_loss)}; best epochs '
          f'{(tracker["best_epoch"] + 1).tolist()}; active {tracker["active"].astype(int).tolist()}')
      save(force=True, replace=True)  # the post-validation state, even over a periodic save
  except KeyboardInterrupt:
    save(force=True)  # refuses (TrainingDiverged) a state that is no longer finite
    log(f'interrupted: saved step {step}; run the same command to resume.')
    raise
  finally:
    manager.wait_until_finished()
    writer.close()

  never = [i for i, e in enumerate(np.asarray(tracker['best_epoch'])) if e < 0]
  if never:
    names = family.sources if len(family.sources) == family.num_outputs else None
    raise errors.TrainingDiverged(
        f'no validated epoch improved on the initial weights for output(s) '
        f'{", ".join(str(names[i] if names else i) for i in never)}; nothing exported (the '
        'initial weights are not a trained model).')
  spec, variables = export(family, config, workdir, best, step, tracker)
  family.after_export(workdir, spec, variables)
  fitted = evaluation.fit_calibration(config, family, best)
  checkpoints.update_model_spec(workdir / 'model', calibration=fitted.to_json())
  results = evaluation.evaluate(config, family, best, workdir / 'results' / 'predictions', fitted)
  if distributed.is_main_process():
    write_json_atomic(results_file, results)
    log(f'wrote {results_file}')
  return results
