"""The paper's model: the primary detector (phases I/II) and K secondary heads on its frozen middle
features (phases III/IV)."""
import functools
import json
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gta_jax import errors
from gta_jax.data import pipeline
from gta_jax.families import base
from gta_jax.families import losses
from gta_jax.families import pretrain
from gta_jax.io import checkpoints
from gta_jax.io import keras_import
from gta_jax.io import run_records
from gta_jax.io.writers import log
from gta_jax.models import frequency
from gta_jax.models import networks
from gta_jax.scoring import metrics
from gta_jax.scoring import openset
from gta_jax.scoring import openset_fit


def detector_train_step(state: base.TrainState, constants, batch, targets, active, *, model,
                        input_kind: str, loss_fn, optimizer):
  """One Adam step of the primary on real(0)/fake(1) targets [B]; BatchNorm statistics updated."""
  del active  # one output: the loop ends when it stops
  x = base.preprocess(batch['image'], input_kind, constants)

  def loss_of(params):
    variables = {'params': params, 'batch_stats': state.batch_stats}
    out, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
    return loss_fn(out.logit, targets, batch['mask']), (out, updates)

  (loss, (out, updates)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
  accuracy = base.masked_mean((out.logit >= 0) == (targets == 1), batch['mask'])
  new_state = base.apply_gradients(state, grads, updates['batch_stats'], optimizer)
  return new_state, {'loss': loss[None], 'accuracy': accuracy[None],
                     'grad_norm': optax.tree.norm(grads)}


def detector_loss_step(variables, constants, batch, targets, *, model, input_kind: str, loss_fn):
  """-> [1] validation loss of the batch, BatchNorm in inference mode."""
  out = model.apply(variables, base.preprocess(batch['image'], input_kind, constants), train=False)
  return loss_fn(out.logit, targets, batch['mask'])[None]


def detector_predict_step(variables, constants, images, *, model, input_kind: str):
  """-> (p_fake [B], p_heads [0, B]) in inference mode."""
  out = model.apply(variables, base.preprocess(images, input_kind, constants), train=False)
  return jax.nn.sigmoid(out.logit), jnp.zeros((0, images.shape[0]))


def detector_batch_stats_step(variables, constants, batch, *, model, input_kind: str):
  """-> the primary's BatchNorm statistics of this batch (`model` has momentum 0)."""
  x = base.preprocess(batch['image'], input_kind, constants)
  _, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  return updates['batch_stats']


def _frozen_head_inputs(primary_model, constants, images, input_kind: str,
                        frequency_inputs: tuple[str, ...] = ()):
  """The frozen primary's output and what the heads read: its conv-4 features (BatchNorm in
  inference mode, no gradient), plus any auxiliary frequency maps (networks.head_inputs)."""
  x = base.preprocess(images, input_kind, constants)
  primary = primary_model.apply(constants['primary'], x, train=False)
  return primary, networks.head_inputs(primary.mid_features, x, frequency_inputs)


def random_patches(features: jax.Array, key: jax.Array, count: int, size: int) -> jax.Array:
  """[B, h, w, C] -> [B * count, size, size, C]: `count` random windows per image (image-major),
  at even offsets so that each window keeps the heads' stride-2 grid."""
  b, h, w, _ = features.shape
  rows_key, cols_key = jax.random.split(key)
  rows = jax.random.randint(rows_key, (b, count), 0, (h - size) // 2 + 1) * 2
  cols = jax.random.randint(cols_key, (b, count), 0, (w - size) // 2 + 1) * 2

  def window(image, top, left):
    return jax.lax.dynamic_slice(image, (top, left, 0), (size, size, image.shape[-1]))

  per_image = jax.vmap(jax.vmap(window, in_axes=(None, 0, 0)), in_axes=(0, 0, 0))
  return per_image(features, rows, cols).reshape(b * count, size, size, features.shape[-1])


def contrastive_embeddings(projection: dict, final_features: jax.Array) -> jax.Array:
  """Each head's pooled final features [K, N, h, w, 32] -> its L2-normalised projection
  [K, N, D] (a per-head linear layer: training only, never exported)."""
  pooled = final_features.mean(axis=(2, 3))
  projected = jnp.einsum('knc,kcd->knd', pooled, projection['kernel']) + projection['bias'][:, None]
  return projected / jnp.maximum(jnp.linalg.norm(projected, axis=-1, keepdims=True), 1e-12)


def check_patch_size(recipe, image_size: int) -> None:
  """Refuses windows that would break the primary's stride grid or not fit the images."""
  if recipe.patches and not (recipe.patch_size % 8 == 0 and 16 <= recipe.patch_size <= image_size):
    raise errors.ConfigError(
        f'config.recipe.patch_size={recipe.patch_size!r}: a multiple of 8 px from 16 to the image '
        f'size ({image_size} px), so that windows keep the primary\'s stride grid.')


class StepRecipe(NamedTuple):
  """The architecture recipe a training step follows (config.recipe; the paper's by default):
  patches > 0 trains on that many random windows of `patch_size` per image (in the units the step
  crops), contrastive adds the supervised contrastive loss at `temperature`, weighted by
  `contrastive_weight` or, when None, by learned weights (DNA-Det). Hashable: a static argument."""
  patches: int = 0
  patch_size: int = 0
  contrastive: bool = False
  temperature: float = 0.07
  contrastive_weight: float | None = None


def step_recipe(recipe, pixels_per_unit: int = 1) -> StepRecipe:
  """config.recipe -> the step's recipe; patch_size in the units the step crops (input pixels, or
  mid-feature pixels of `pixels_per_unit` = 4 input pixels each)."""
  return StepRecipe(int(recipe.patches), int(recipe.patch_size) // pixels_per_unit,
                    bool(recipe.contrastive), float(recipe.temperature),
                    None if recipe.contrastive_weighting == 'learned'
                    else float(recipe.contrastive_weight))


def heads_train_step(state: base.TrainState, constants, batch, targets, active, *, primary_model,
                     heads_model, input_kind: str, loss_fn, optimizer,
                     recipe: StepRecipe = StepRecipe(), frequency_inputs: tuple[str, ...] = ()):
  """One step of all K heads on frozen primary features; stopped heads (active=0) stay put.

  targets: [K, B] one-vs-rest labels. Each head's loss depends only on its own slice of the
  stacked parameters, so summing the K losses trains K independent heads at once.

  Architecture recipes (`recipe`, StepRecipe): patches > 0 trains on that many random windows of
  `patch_size` mid-feature pixels per image (one loss per window: each window has to carry the
  fingerprint; the mid features are computed once on the whole image, so a window sees what the
  same place of the whole image sees); contrastive adds the supervised contrastive loss of each
  head's projected pooled features, with the images' source ids as labels and every window as a
  view, weighted by `contrastive_weight` or, when None, by learned weights as DNA-Det
  (losses.automatically_weighted, the weights in params['loss_weights']). frequency_inputs adds
  auxiliary frequency maps of the whole image beside the mid features (windowed with them).
  """
  patches, patch_size, contrastive, temperature, contrastive_weight = recipe
  _, head_inputs = _frozen_head_inputs(primary_model, constants, batch['image'], input_kind,
                                       frequency_inputs)
  mask = batch['mask']
  source_id = batch['source_id'] if contrastive else None  # the contrastive labels
  if patches:
    key = jax.random.fold_in(jax.random.wrap_key_data(constants['patch_key']), state.step)
    head_inputs = random_patches(head_inputs, key, patches, patch_size)
    targets, mask = jnp.repeat(targets, patches, axis=-1), jnp.repeat(mask, patches)
    source_id = None if source_id is None else jnp.repeat(source_id, patches)

  def loss_of(params):
    variables = {'params': params, 'batch_stats': state.batch_stats}
    out, updates = heads_model.apply(variables, head_inputs, train=True, mutable=['batch_stats'])
    per_head = loss_fn(out.logit, targets, mask[None, :])
    if contrastive:
      embeddings = contrastive_embeddings(params['projection'], out.final_features)
      supcon = jax.vmap(losses.supervised_contrastive, in_axes=(0, None, None, None))(
          embeddings, source_id, mask, temperature)
      if contrastive_weight is None:  # [K, 2] weights, one pair per head
        combined = losses.automatically_weighted(jnp.stack([per_head, supcon], -1),
                                                 params['loss_weights'])
      else:
        combined = per_head + contrastive_weight * supcon
      return combined.sum(), (per_head, out, updates)
    return per_head.sum(), (per_head, out, updates)

  (_, (per_head, out, updates)), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
  updated = base.apply_gradients(state, grads, updates['batch_stats'], optimizer)
  keep = functools.partial(base.select_outputs, active)
  accuracy = base.masked_mean((out.logit >= 0) == (targets == 1), mask[None, :], axis=-1)
  return base.TrainState(updated.step, keep(updated.params, state.params),
                         keep(updated.batch_stats, state.batch_stats),
                         keep(updated.opt_state, state.opt_state)), {
                             'loss': per_head, 'accuracy': accuracy,
                             'grad_norm': optax.tree.norm(grads)}


def heads_loss_step(variables, constants, batch, targets, *, primary_model, heads_model,
                    input_kind: str, loss_fn, frequency_inputs: tuple[str, ...] = ()):
  """-> [K] validation loss of the batch per head."""
  _, head_inputs = _frozen_head_inputs(primary_model, constants, batch['image'], input_kind,
                                       frequency_inputs)
  out = heads_model.apply(variables, head_inputs, train=False)
  return loss_fn(out.logit, targets, batch['mask'][None, :])


def heads_predict_step(variables, constants, images, *, primary_model, heads_model,
                       input_kind: str, frequency_inputs: tuple[str, ...] = ()):
  """-> (p_fake [B] of the frozen primary, p_heads [K, B]) in inference mode."""
  primary, head_inputs = _frozen_head_inputs(primary_model, constants, images, input_kind,
                                             frequency_inputs)
  heads = heads_model.apply(variables, head_inputs, train=False)
  return jax.nn.sigmoid(primary.logit), jax.nn.sigmoid(heads.logit)


def heads_batch_stats_step(variables, constants, batch, *, primary_model, heads_model,
                           input_kind: str, frequency_inputs: tuple[str, ...] = ()):
  """-> the heads' BatchNorm statistics of this batch (`heads_model` has momentum 0)."""
  _, head_inputs = _frozen_head_inputs(primary_model, constants, batch['image'], input_kind,
                                       frequency_inputs)
  _, updates = heads_model.apply(variables, head_inputs, train=True, mutable=['batch_stats'])
  return updates['batch_stats']


def class_weighted_bce(*, negative_weight: float = 1.0, positive_weight: float = 1.0,
                       drop_hardest_positives: float = 0.0):
  """The release's plain mean BCE at weights 1, else losses.sigmoid_bce_class_weighted; with a
  share of the hardest positives dropped, losses.sigmoid_bce_hardest_positives_dropped."""
  if drop_hardest_positives:
    return functools.partial(losses.sigmoid_bce_hardest_positives_dropped,
                             drop=float(drop_hardest_positives),
                             negative_weight=float(negative_weight),
                             positive_weight=float(positive_weight))
  if negative_weight == 1.0 and positive_weight == 1.0:
    return losses.sigmoid_bce
  return functools.partial(losses.sigmoid_bce_class_weighted, negative_weight=float(negative_weight),
                           positive_weight=float(positive_weight))


class Detector(base.SingleModelFamily):
  """The primary real-vs-fake network, trained from scratch (I) or on from phase I (II)."""
  name = 'primary'
  tasks = ('detection',)
  train_step_fn = staticmethod(detector_train_step)
  loss_step_fn = staticmethod(detector_loss_step)
  predict_step_fn = staticmethod(detector_predict_step)

  @property
  def loss_fn(self):
    return class_weighted_bce(negative_weight=self.config.optim.real_class_weight,
                              drop_hardest_positives=self.config.optim.drop_hardest_positives)

  def __init__(self, config, dataset, workdir=None):
    super().__init__(config, dataset, workdir)
    if self.sources:
      raise errors.ConfigError(f'config.sources={self.sources} but config.model.family=primary detects '
                       'only; heads are trained by config.model.family=heads.')
    self.model = networks.Primary(networks.uses_gap(self.input_kind), config.model.bn_momentum,
                                config.model.conv_impl)

  def outputs(self) -> metrics.Outputs:
    return metrics.Outputs(detection=True, any_input_size=self.input_kind == 'pixel')

  def make_batch_stats_step(self):
    return jax.jit(functools.partial(detector_batch_stats_step,
                                     model=self.model.clone(bn_momentum=0.0),
                                     input_kind=self.input_kind))

  def init_variables(self, key):
    channels = 1 if self.input_kind == 'dct' else 3
    size = self.dataset.image_size
    return networks.init_variables(self.model, key, (1, size, size, channels))

  def targets(self, batch):
    return batch['label'].astype(np.float32)

  def variables_from_bundle(self, spec, variables, source):
    return variables['primary']

  def bundle_variables(self, trained):
    return {'primary': trained}


class Heads(base.Family):
  """K one-vs-rest heads (one per source in config.sources) on a frozen, shared primary.

  The primary comes from config.init.primary (a phase-II workdir, a bundle or a release .h5) or,
  for phase IV, from the primary recorded by config.init.from_run. The run records it in
  primary.json (path, digest) and refuses a different one later.
  """
  name = 'heads'
  tasks = ('attribution',)
  stacked_outputs = True
  recipe_extras = ('frequency_inputs', 'pretrain_steps')

  def __init__(self, config, dataset, workdir=None):
    super().__init__(config, dataset, workdir)
    if not self.sources:
      raise errors.ConfigError('config.sources is empty: name the source of each head, e.g. '
                       "--config.sources=\"('tconv',)\".")
    gap = networks.uses_gap(self.input_kind)
    self.primary_model = networks.Primary(gap, config.model.bn_momentum, config.model.conv_impl)
    self.heads_model = networks.StackedHeads(len(self.sources), gap, config.model.bn_momentum,
                                           conv_impl=config.model.conv_impl)
    self.primary_variables, record, primary_dct = self._load_primary(config, dataset, workdir)
    self.records['primary.json'] = record
    if self.input_kind == 'dct' and primary_dct is not None:
      # The frozen primary normalises its DCT input as it was trained to: with its bundle's
      # statistics (those of its own training data, which a folder dataset's need not be).
      self.dct_stats = tuple(np.asarray(a, np.float32) for a in primary_dct)
      if not all(np.array_equal(a, b) for a, b in zip(self.dct_stats, dataset.dct_stats)):
        log(f'DCT statistics: the primary\'s ({record["path"]}), not {dataset.name}\'s')
    self.recipe = config.recipe
    self.head_frequency_inputs = tuple(config.recipe.frequency_inputs)
    check_patch_size(self.recipe, dataset.image_size)
    if (self.recipe.contrastive or self.recipe.pretrain_steps) and config.init.from_run:
      raise errors.ConfigError(
          'config.recipe.contrastive and config.recipe.pretrain_steps start heads from scratch '
          f'(phase III recipes); config.init.from_run={config.init.from_run!r} warm-starts from a '
          'bundle, which holds no contrastive projection and is trained already.')

  @staticmethod
  def _load_primary(config, dataset, workdir):
    reference = config.init.primary
    if not reference and config.init.from_run:
      recorded = pathlib.Path(config.init.from_run) / 'primary.json'
      if not recorded.is_file():
        raise errors.MissingRunError(
            f'config.init.from_run={config.init.from_run!r} has no primary.json (no phase-III '
            'run there). ' + run_records.missing_run_hint(config.init.from_run, config, 3))
      reference = json.loads(recorded.read_text())['path']
    loaded = keras_import.load_any(pathlib.Path(reference)) if reference else None
    if loaded is None:
      raise errors.MissingRunError(
          f'config.init.primary={reference!r}: no trained primary there. '
          + run_records.missing_run_hint(reference, config, 2)
          + '; or point --config.init.primary at a phase-II workdir, a model bundle or a release '
          '.h5.')
    spec, variables, primary_dct = loaded
    run_records.check_lineage(config, dataset.image_size, pathlib.Path(reference), spec,
                              'config.init.primary')
    primary = variables['primary']
    record = {'path': str(pathlib.Path(reference).absolute()),
              'digest': checkpoints.tree_digest(primary), 'input_kind': spec.input_kind,
              'source': spec.source, 'trained_steps': spec.trained_steps,
              'best_epoch': list(spec.best_epochs)}
    record_file = pathlib.Path(workdir) / 'primary.json' if workdir else None
    if record_file is not None and record_file.is_file():
      built_on = json.loads(record_file.read_text())
      if built_on['digest'] != record['digest']:
        raise errors.ConfigError(
            f'{workdir} was trained on the primary {built_on["path"]} (digest '
            f'{built_on["digest"][:12]}), but {reference} holds different weights '
            f'({record["digest"][:12]}). Use a new workdir for a new primary.')
    return primary, record, primary_dct

  def outputs(self) -> metrics.Outputs:
    return metrics.Outputs(detection=True, head_names=self.sources, head_ids=self.source_ids,
                           multiclass='claims', self_contradiction=True,
                           any_input_size=self.input_kind == 'pixel')

  def constants(self) -> dict:
    constants = super().constants() | {'primary': self.primary_variables}
    if self.recipe.patches:  # the windows' offsets: fold_in(patch_key, step) in the step
      constants['patch_key'] = jax.random.key_data(
          jax.random.fold_in(jax.random.key(self.config.seed), 1))
    return constants

  def init_variables(self, key):
    size = -(-self.dataset.image_size // 4)
    channels = 16 + frequency.num_channels(self.head_frequency_inputs)
    variables = networks.init_variables(self.heads_model, key, (1, size, size, channels))
    if self.recipe.contrastive:  # training-only parameters, stacked per head; never exported
      k, features = len(self.sources), self.recipe.projection_features
      projection = {'kernel': networks.KERNEL_INIT(jax.random.fold_in(key, 1), (k, 32, features)),
                    'bias': jnp.zeros((k, features))}
      variables = {**variables, 'params': {**variables['params'], 'projection': projection}}
      if self.recipe.contrastive_weighting == 'learned':
        variables['params']['loss_weights'] = jnp.ones((k, 2))
    return variables

  def pretrained_state(self, state, key, optimizer):
    """DNA-Det's pre-training of the heads' convs (config.recipe.pretrain_steps,
    gta_jax/families/pretrain.py) before phase III; its history goes to pretraining.json."""
    if not self.recipe.pretrain_steps:
      return state
    heads = {'params': {'heads': state.params['heads']}, 'batch_stats': state.batch_stats}
    pretrained, history = pretrain.pretrained_heads(
        heads, jax.random.fold_in(key, 2), images=pretrain.real_training_images(self.dataset),
        steps=int(self.recipe.pretrain_steps), batch_size=self.config.optim.batch_size,
        learning_rate=self.config.optim.learning_rate, seed=self.config.seed,
        constants=self.constants(), primary_model=self.primary_model,
        heads_model=self.heads_model, input_kind=self.input_kind,
        frequency_inputs=self.head_frequency_inputs)
    self.records['pretraining.json'] = {'steps': int(self.recipe.pretrain_steps),
                                        'classes': list(pretrain.TRANSFORMS), 'history': history}
    return base.new_state({'params': {**state.params, **pretrained['params']},
                           'batch_stats': pretrained['batch_stats']}, optimizer)

  def _bound(self, step, heads_model=None, **kwargs):
    return functools.partial(step, primary_model=self.primary_model,
                             heads_model=heads_model or self.heads_model,
                             input_kind=self.input_kind,
                             frequency_inputs=self.head_frequency_inputs, **kwargs)

  @property
  def loss_fn(self):
    return class_weighted_bce(positive_weight=self.config.optim.head_positive_weight,
                              drop_hardest_positives=self.config.optim.drop_hardest_positives)

  def make_train_step(self, optimizer):
    return jax.jit(self._bound(heads_train_step, loss_fn=self.loss_fn, optimizer=optimizer,
                               recipe=step_recipe(self.recipe, 4)), donate_argnums=0)

  def make_loss_step(self):
    return jax.jit(self._bound(heads_loss_step, loss_fn=self.loss_fn))

  def make_predict_step(self):
    return jax.jit(self._bound(heads_predict_step))

  def make_batch_stats_step(self):
    return jax.jit(self._bound(heads_batch_stats_step,
                               heads_model=self.heads_model.clone(bn_momentum=0.0)))

  def targets(self, batch):
    return pipeline.head_targets(batch['source_id'], self.source_ids)

  def variables_from_bundle(self, spec, variables, source):
    if tuple(spec.head_names) != self.sources:
      raise errors.ConfigError(f'{source} trained heads {spec.head_names}, config.sources is '
                       f'{self.sources}.')
    if tuple(spec.head_frequency_inputs) != self.head_frequency_inputs:
      raise errors.ConfigError(
          f'{source} trained heads on the frequency inputs {tuple(spec.head_frequency_inputs)}, '
          f'config.recipe.frequency_inputs is {self.head_frequency_inputs}: set it to the same.')
    if spec.primary_digest != self.records['primary.json']['digest']:
      raise errors.ConfigError(f'{source} was trained on a different primary than '
                       f'{self.records["primary.json"]["path"]}.')
    return variables['heads']

  def after_export(self, workdir, spec, variables):
    """The open-set thresholds and kNN bank, fitted on the validation split, into the bundle."""
    fitted = openset_fit.fit(openset_fit.HeadsRun(
        pathlib.Path(workdir), spec, variables, self.dataset, tuple(self.source_ids),
        self.config.eval.batch_size, trained_on=self.dataset, dct_stats=self.dct_stats))
    log(openset.describe(fitted, self.sources))

  def bundle_variables(self, trained):
    """The heads as attribute loads them: without the training-only contrastive parameters."""
    params = {k: v for k, v in trained['params'].items()
              if k not in ('projection', 'loss_weights')}
    return {'primary': self.primary_variables, 'heads': {**trained, 'params': params}}
