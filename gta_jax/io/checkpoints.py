"""Our on-disk model format ("model bundle") and content hashes, on Orbax.

A model bundle is what every command that takes a model accepts (attribute, evaluation, training
heads on top of a primary), whether it was imported from a release .h5 or exported by a run:

  BUNDLE/
    model.json    ModelSpec: input kind, image size, head names, provenance, primary digest
    variables/    Orbax checkpoint of {'primary': {'params', 'batch_stats'},
                                       'heads': {'params', 'batch_stats'}}  (heads: leading axis K)
    dct_stats/    mean.npy, std_dev.npy, variance.npy (DCT models only)
"""
import dataclasses
import hashlib
import json
import pathlib
import re

import jax
import numpy as np
import orbax.checkpoint as ocp

from gta_jax import errors
from gta_jax.io import distributed
from gta_jax.io import writers
from gta_jax.models import frequency
from gta_jax.models import spectral
from gta_jax.scoring import calibration as calibration_lib
from gta_jax.scoring import verdicts

BUNDLE_FORMAT = 'gta_jax.model_bundle/1'


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What a bundle holds, enough to rebuild its modules and preprocess inputs."""
  input_kind: str                 # 'pixel' (x/127.5 - 1, GAP heads) or 'dct' (log-DCT, Flatten heads)
  image_size: int                 # trained size; DCT models need exactly this, pixel models any
  head_names: tuple[str, ...] = ()
  source: str = ''                # where the weights came from (file or run), for the record
  primary_digest: str = ''        # tree_digest of the primary's variables
  arch: str = 'proposed'  # proposed | gandct | postpool | dnadet (baselines: variables['primary'])
  task: str = 'detection'         # detection | attribution | multiclass (config.task)
  trained_steps: int = 0          # optimiser steps the run took (0: imported)
  best_epochs: tuple[int, ...] = ()  # 1-based epoch of the kept weights, per output
  # What the outputs claim at (gta_jax/scoring/verdicts.py): {'fake': t, 'heads': t or [t per head]}.
  thresholds: dict = dataclasses.field(default_factory=lambda: verdicts.Thresholds().to_json())
  # Open-set thresholds per head fitted on the validation split (gta_jax/tools/openset.py):
  # {'tpr95': [t per head], 'doc': [t per head], 'knn': {'k', 'threshold', 'acceptance',
  # 'operating_points', 'bank', 'images'}, 'split', 'mode', ...}; {} when not fitted.
  open_set: dict = dataclasses.field(default_factory=dict)
  # Auxiliary frequency maps the heads read beside the mid features (gta_jax/models/frequency.py).
  head_frequency_inputs: tuple[str, ...] = ()
  # One record per head, () for bundles written before heads carried one: where the head was
  # trained ('run', 'config', 'dataset' {name, config, sha256}, 'trained_steps', 'best_epoch',
  # 'name_in_run' when renamed) and 'digest', the tree_digest of its weights (head_variables),
  # checked on load. A model composed of heads from several runs (gta_jax/io/composition.py)
  # keeps each head's own.
  head_provenance: tuple[dict, ...] = ()
  # True for a model composed by gta-model (gta_jax/io/composition.py): the only bundles that
  # gta-model changes in place; a run's own bundle is never rewritten.
  composed: bool = False
  # tree_digest of the whole variables tree (every module, baselines too) and the sha256 of every
  # other file of the bundle (DCT statistics, kNN banks) by relative path: checked on load, so a
  # flipped bit anywhere is refused instead of changing scores. '' and {} in bundles written
  # before they were recorded (those load unchecked, as they did).
  variables_digest: str = ''
  side_files: dict = dataclasses.field(default_factory=dict)
  # Temperatures and fixed-FPR thresholds fitted on the validation split at export
  # (gta_jax/scoring/calibration.py): {'detection': record or None, 'heads': [record or None per
  # head], 'fit': {'split', 'mode', 'seed', 'images', 'digest'}}; {} when not fitted (bundles of
  # before, release .h5 imports). They change reported probabilities, never a verdict.
  calibration: dict = dataclasses.field(default_factory=dict)

  def to_json(self) -> dict:
    return {'format': BUNDLE_FORMAT, **dataclasses.asdict(self), 'head_names': list(self.head_names),
            'best_epochs': list(self.best_epochs),
            'head_frequency_inputs': list(self.head_frequency_inputs),
            'head_provenance': [dict(p) for p in self.head_provenance]}

  @classmethod
  def from_json(cls, record, path) -> 'ModelSpec':
    """Checks every field's type and range: a hand-edited model.json gets an error naming the key."""
    if not isinstance(record, dict) or record.get('format') != BUNDLE_FORMAT:
      found = record.get('format') if isinstance(record, dict) else type(record).__name__
      raise errors.ConfigError(f'{path}: not a gta_jax model bundle (format {found!r}, '
                               f'expected {BUNDLE_FORMAT!r}).')
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in record.items() if k in fields}

    def bad(key, expected):
      return errors.ConfigError(f'{path}: "{key}" is {record.get(key)!r}; expected {expected}.')

    if kwargs.get('input_kind') not in ('pixel', 'dct'):
      raise bad('input_kind', '"pixel" or "dct"')
    if not _is_int(kwargs.get('image_size')) or kwargs['image_size'] < 8:
      raise bad('image_size', 'an integer of at least 8')
    names = kwargs.get('head_names', [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names) or (
        len(set(names)) != len(names)):
      raise bad('head_names', 'a list of distinct non-empty names')
    if not isinstance(kwargs.get('primary_digest'), str) or not re.fullmatch(
        '[0-9a-f]{64}', kwargs['primary_digest']):
      raise bad('primary_digest', 'the 64-digit sha256 of the primary written with the bundle')
    for key in ('source', 'arch', 'task'):
      if key in kwargs and not isinstance(kwargs[key], str):
        raise bad(key, 'a string')
    if kwargs.get('arch', 'proposed') not in ('proposed', 'gandct', 'postpool', 'dnadet'):
      raise bad('arch', 'proposed, gandct, postpool or dnadet')
    if not isinstance(kwargs.get('composed', False), bool):
      raise bad('composed', 'true or false')
    if not _is_int(kwargs.get('trained_steps', 0)) or kwargs.get('trained_steps', 0) < 0:
      raise bad('trained_steps', 'a non-negative integer')
    epochs = kwargs.get('best_epochs', [])
    if not isinstance(epochs, list) or not all(_is_int(e) for e in epochs):
      raise bad('best_epochs', 'a list of integers')
    kwargs['head_names'] = tuple(names)
    kwargs['best_epochs'] = tuple(epochs)
    inputs = kwargs.get('head_frequency_inputs', [])
    try:
      kwargs['head_frequency_inputs'] = frequency.check_names(inputs, 'head_frequency_inputs')
      if not isinstance(inputs, list) or (inputs and kwargs['input_kind'] != 'pixel'):
        raise ValueError
    except (TypeError, ValueError):
      raise bad('head_frequency_inputs', f'a list of distinct names of {", ".join(frequency.FREQUENCY_INPUTS)} '
                '(pixel models only)') from None
    provenance = kwargs.get('head_provenance', [])
    if not isinstance(provenance, list) or (provenance and len(provenance) != len(names)) or not all(
        isinstance(p, dict) and re.fullmatch('[0-9a-f]{64}', str(p.get('digest', '0' * 64)))
        for p in provenance):
      raise bad('head_provenance', 'a list of one record per head (each with "digest": the sha256 of '
                'its weights), or []')
    kwargs['head_provenance'] = tuple(provenance)
    if kwargs.get('task') == 'heads':  # bundles written before config.task covered heads runs
      kwargs['task'] = 'attribution'
    try:
      thresholds = verdicts.Thresholds.from_json(kwargs.get('thresholds'))
      values = [thresholds.fake, *np.atleast_1d(thresholds.heads)]
      if not all(0 < v < 1 for v in values):
        raise ValueError
    except (AttributeError, TypeError, ValueError):
      raise bad('thresholds', '{"fake": t, "heads": t or [t per head]} with every t in (0, 1)') \
          from None
    if isinstance(thresholds.heads, (list, tuple)) and len(thresholds.heads) != len(names):
      raise bad('thresholds', f'"heads": one threshold per head ({len(names)}), or one for all; '
                f'found {len(thresholds.heads)}')
    kwargs['thresholds'] = thresholds.to_json()
    if not isinstance(kwargs.get('variables_digest', ''), str) or not re.fullmatch(
        '([0-9a-f]{64})?', kwargs.get('variables_digest', '')):
      raise bad('variables_digest', 'the 64-digit sha256 of the weights written with the bundle')
    side = kwargs.get('side_files', {})
    if not isinstance(side, dict) or not all(
        isinstance(k, str) and k and not k.startswith('/') and '..' not in k.split('/')
        and isinstance(v, str) and re.fullmatch('[0-9a-f]{64}', v) for k, v in side.items()):
      raise bad('side_files', '{"relative/path": sha256} of the bundle\'s other files')
    kwargs['side_files'] = dict(side)
    open_set = kwargs.get('open_set', {})
    if not isinstance(open_set, dict):
      raise bad('open_set', 'a dict of per-head threshold lists')
    for method in ('tpr95', 'doc'):
      values = open_set.get(method)
      if values is not None and not (
          isinstance(values, list) and len(values) == len(names) and
          all(_is_number(v) and 0 < v < 1 for v in values)):
        raise bad('open_set', f'open_set.{method}: one threshold in (0, 1) per head')
    knn = open_set.get('knn')
    if isinstance(knn, dict) and 'acceptance' not in knn:
      # Fitted before the acceptance was recorded: those thresholds kept 95% of the known
      # validation fakes. Filled here, once, so every reader finds the field.
      knn = {**knn, 'acceptance': 0.95}
      kwargs['open_set'] = open_set = {**open_set, 'knn': knn}
    if knn is not None and not (isinstance(knn, dict) and _valid_knn(knn)):
      raise bad('open_set', 'open_set.knn: {"k": k >= 1, "threshold": t in [-2, 0], "bank": a file '
                'name in the bundle, "acceptance": a in [0.5, 1), "operating_points": {a: t}}')
    groups = open_set.get('knn_groups')
    if groups is not None and not (
        isinstance(groups, list) and knn is None and all(
            isinstance(g, dict) and _valid_knn(g) and isinstance(g.get('heads'), list)
            and g['heads'] and set(g['heads']) <= set(names) for g in groups)
        and len({h for g in groups for h in g['heads']}) == sum(len(g['heads']) for g in groups)):
      raise bad('open_set', 'open_set.knn_groups: a list of kNN calibrations as open_set.knn, each '
                'with "heads": the distinct heads of the model it was fitted with (and no "knn" '
                'beside it)')
    calibration = kwargs.get('calibration', {})
    problem = calibration_lib.check_record(calibration, 'calibration')
    if problem is None and calibration and len(calibration.get('heads', [])) != len(names):
      problem = f'calibration.heads holds {len(calibration["heads"])} records for {len(names)} heads'
    if problem:
      raise errors.ConfigError(f'{path}: {problem}.')
    return cls(**kwargs)


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _valid_knn(knn: dict) -> bool:
  """A kNN calibration record (open_set.knn, or one of open_set.knn_groups)."""
  knn = {'acceptance': 0.95, **knn}  # written before the acceptance was recorded
  return (_is_int(knn.get('k')) and knn['k'] >= 1
          and _is_number(knn.get('threshold')) and -2 <= knn['threshold'] <= 0
          and isinstance(knn.get('bank'), str) and knn['bank'] == pathlib.PurePath(knn['bank']).name
          and _is_number(knn['acceptance']) and 0.5 <= knn['acceptance'] < 1
          and isinstance(knn.get('operating_points', {}), dict)
          and all(_is_number(t) and -2 <= t <= 0 for t in knn.get('operating_points', {}).values()))


def tree_digest(tree) -> str:
  """sha256 over every leaf's path, dtype, shape and bytes: identifies weights, not files."""
  digest = hashlib.sha256()
  for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(tree)[0],
                           key=lambda item: jax.tree_util.keystr(item[0])):
    array = np.asarray(leaf)
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(f'{array.dtype}{array.shape}'.encode())
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()


def head_variables(heads: dict, k: int) -> dict:
  """Head k of stacked heads' variables, keeping the leading axis (size 1): a model of one head."""
  return jax.tree.map(lambda a: a[k:k + 1], heads)


def stack_heads(parts: list) -> dict:
  """Stacked heads' variables from single or stacked parts, concatenated on the head axis."""
  return jax.tree.map(lambda *a: np.concatenate([np.asarray(x) for x in a]), *parts)


def head_digest(heads: dict, k: int) -> str:
  """tree_digest of head k's variables: identifies one head's weights wherever it is stacked."""
  return tree_digest(jax.tree.map(np.asarray, head_variables(heads, k)))


def with_head_digests(spec: ModelSpec, variables: dict) -> ModelSpec:
  """The spec with each head's provenance record carrying its weights' digest."""
  if not spec.head_names or 'heads' not in variables:
    return spec
  records = spec.head_provenance or tuple({} for _ in spec.head_names)
  return dataclasses.replace(spec, head_provenance=tuple(
      {**record, 'digest': head_digest(variables['heads'], k)} for k, record in enumerate(records)))


def is_model_bundle(path) -> bool:
  return (pathlib.Path(path) / 'model.json').is_file()


def save_model_bundle(directory, spec: ModelSpec, variables: dict,
                      dct_stats: tuple[np.ndarray, np.ndarray] | None = None) -> ModelSpec:
  """Writes a bundle; returns the spec with the primary's digest filled in."""
  directory = pathlib.Path(directory).absolute()
  if spec.input_kind == 'dct' and dct_stats is None:
    raise errors.ConfigError('A DCT model bundle needs its DCT statistics (mean, std).')
  check_finite(variables, f'the model to be written to {directory}')
  check_batch_norm(variables, f'the model to be written to {directory}')
  host_variables = jax.tree.map(np.asarray, variables)
  spec = dataclasses.replace(spec, primary_digest=tree_digest(variables['primary']),
                             variables_digest=tree_digest(host_variables))
  spec = with_head_digests(spec, variables)
  directory.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:  # every process takes part (Orbax's barriers)
    checkpointer.save(directory / 'variables', host_variables, force=True)
  if not distributed.is_main_process():
    return spec
  if dct_stats is not None:
    mean, std = dct_stats
    stats = spectral.DctStats(mean=mean, std=std, count=1)
    stats.save(directory / 'dct_stats')
  spec = dataclasses.replace(spec, side_files=side_file_digests(directory))
  _write_spec(directory / 'model.json', spec)
  return spec


def _write_spec(spec_file: pathlib.Path, spec: ModelSpec) -> None:
  writers.write_json_atomic(spec_file, spec.to_json())


def _file_digest(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  try:
    with open(path, 'rb') as f:
      for block in iter(lambda: f.read(1 << 20), b''):
        digest.update(block)
  except OSError as e:
    raise errors.ConfigError(f'{path}: cannot be read ({e.strerror}).') from None
  return digest.hexdigest()


def side_file_digests(directory, names=None) -> dict:
  """{relative path: sha256} of the bundle's files beside model.json and variables/ (hidden
  files, such as a staging model.json, left out); `names`: only these."""
  directory = pathlib.Path(directory)
  found = {}
  for path in sorted(directory.rglob('*')):
    relative = path.relative_to(directory).as_posix()
    if (not path.is_file() or relative == 'model.json' or relative.startswith('variables/')
        or any(part.startswith('.') for part in relative.split('/'))):
      continue
    if names is None or relative in names:
      found[relative] = _file_digest(path)
  return found


def check_side_files(directory, spec: ModelSpec, skip=()) -> None:
  """Every file model.json lists is there with its digest; a clear error naming it if not."""
  directory = pathlib.Path(directory)
  for relative, digest in spec.side_files.items():
    if relative in skip:
      continue
    path = directory / relative
    if not path.is_file():
      raise errors.ConfigError(f'{directory}: {relative} is missing (model.json lists it); the '
                               'bundle is incomplete.')
    if _file_digest(path) != digest:
      raise errors.ConfigError(f'{directory}: {relative} does not match its digest in model.json; '
                               'the bundle was modified or is corrupt.')


def update_model_spec(directory, rewritten=(), removed=(), **changes) -> ModelSpec:
  """Rewrites a bundle's model.json with `changes` (e.g. fitted open-set thresholds); the weights
  are not touched. `rewritten`: the side files the caller has just written (a kNN bank), whose
  digests are recorded anew; `removed`: listed files the caller deletes once this returns; every
  other listed file must still match its digest. The new file replaces the old one in one
  rename."""
  directory = pathlib.Path(directory)
  spec_file = directory / 'model.json'
  spec = read_model_spec(directory)
  check_side_files(directory, spec, skip=tuple(rewritten) + tuple(removed))
  if rewritten or removed:
    kept = {k: v for k, v in spec.side_files.items() if k not in removed}
    changes.setdefault('side_files', {**kept, **side_file_digests(directory, set(rewritten))})
  spec = dataclasses.replace(spec, **changes)
  ModelSpec.from_json(spec.to_json(), spec_file)  # what is written must read back
  if not distributed.is_main_process():
    return spec
  _write_spec(spec_file, spec)
  return spec


def read_model_spec(directory) -> ModelSpec:
  """A bundle's model.json, checked (the weights are not read)."""
  spec_file = pathlib.Path(directory).absolute() / 'model.json'
  if not spec_file.is_file():
    raise errors.MissingRunError(f'{spec_file.parent} is not a model bundle: it has no model.json.')
  try:
    record = json.loads(spec_file.read_text())
  except OSError as e:
    raise errors.ConfigError(f'{spec_file}: cannot be read ({e.strerror}).') from None
  except (UnicodeDecodeError, ValueError) as e:
    raise errors.ConfigError(f'{spec_file}: not valid JSON ({e}).') from None
  return ModelSpec.from_json(record, spec_file)


def load_model_bundle(directory):
  """Reads a bundle -> (spec, variables, dct_stats or None)."""
  directory = pathlib.Path(directory).absolute()
  spec = read_model_spec(directory)
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      variables = checkpointer.restore(directory / 'variables')
  except Exception as e:  # Orbax raises many kinds (FileNotFoundError, ValueError, tensorstore)
    raise errors.ConfigError(f'{directory / "variables"}: cannot read the weights '
                             f'({type(e).__name__}: {str(e)[:200]}).') from None
  variables = jax.tree.map(np.asarray, variables)
  if not isinstance(variables, dict) or 'primary' not in variables:
    raise errors.ConfigError(f'{directory / "variables"}: holds no primary weights.')
  if tree_digest(variables['primary']) != spec.primary_digest:
    raise errors.ConfigError(f'{directory}: the primary weights do not match the digest in model.json; '
                     'the bundle was modified or is corrupt.')
  if spec.arch == 'proposed':
    check_variables(spec, variables, directory)
    for k, record in enumerate(spec.head_provenance):
      if 'digest' in record and head_digest(variables['heads'], k) != record['digest']:
        raise errors.ConfigError(f'{directory}: the weights of head {spec.head_names[k]!r} do not '
                                 'match their digest in model.json; the bundle was modified or is '
                                 'corrupt.')
  if spec.variables_digest and tree_digest(variables) != spec.variables_digest:
    raise errors.ConfigError(f'{directory}: the weights do not match their digest in model.json '
                             '(variables_digest); the bundle was modified or is corrupt.')
  check_side_files(directory, spec)
  check_finite(variables, str(directory))
  check_batch_norm(variables, str(directory))
  dct_stats = spectral.load_dct_stats(directory / 'dct_stats') if spec.input_kind == 'dct' else None
  return spec, variables, dct_stats


def check_finite(variables, what: str) -> None:
  """Refuses NaN or infinite weights or BatchNorm statistics: they give NaN scores that would
  otherwise read as verdicts."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    array = np.asarray(leaf)
    if not np.issubdtype(array.dtype, np.number):
      raise errors.ConfigError(f'{what}: {jax.tree_util.keystr(path)} is {array.dtype}, not numbers.')
    if not np.all(np.isfinite(array)):
      raise errors.ConfigError(f'{what}: {jax.tree_util.keystr(path)} holds NaN or infinite values.')


def check_batch_norm(variables, what: str) -> None:
  """Refuses a negative BatchNorm variance (a crafted or corrupt file): rsqrt(var + eps) of it is
  NaN or huge, and no training can produce one."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    keys = [getattr(k, 'key', getattr(k, 'name', None)) for k in path]
    if 'batch_stats' in keys and keys[-1] == 'var':
      array = np.asarray(leaf)
      if np.any(array < 0):
        raise errors.ConfigError(f'{what}: {jax.tree_util.keystr(path)} holds negative BatchNorm '
                                 f'variances (min {float(array.min()):.3g}); the weights are '
                                 'corrupt.')


def check_variables(spec: ModelSpec, variables: dict, path) -> None:
  """Every array must have the name and shape our modules would create (import and load)."""
  from gta_jax.models import networks  # local: models does not need checkpoints, keep it that way
  size = spec.image_size
  channels = 1 if spec.input_kind == 'dct' else 3
  gap = networks.uses_gap(spec.input_kind)
  expected = {'primary': jax.eval_shape(lambda: networks.init_variables(
      networks.Primary(gap), jax.random.key(0), (1, size, size, channels)))}
  if spec.head_names:
    expected['heads'] = jax.eval_shape(lambda: networks.init_variables(
        networks.StackedHeads(len(spec.head_names), gap), jax.random.key(0),
        (1, -(-size // 4), -(-size // 4),
         16 + frequency.num_channels(spec.head_frequency_inputs))))
  got_shapes = jax.tree.map(np.shape, variables)
  want_shapes = jax.tree.map(lambda s: tuple(s.shape), expected)
  if got_shapes != want_shapes:
    flat_got = dict(jax.tree_util.tree_flatten_with_path(got_shapes, is_leaf=_is_shape)[0])
    flat_want = dict(jax.tree_util.tree_flatten_with_path(want_shapes, is_leaf=_is_shape)[0])
    diffs = [f'{jax.tree_util.keystr(k)}: file {flat_got.get(k)} vs model {flat_want.get(k)}'
             for k in sorted(set(flat_got) | set(flat_want), key=jax.tree_util.keystr)
             if flat_got.get(k) != flat_want.get(k)]
    raise errors.ConfigError(f'{path}: weights do not fit the paper\'s architecture '
                             f'({spec.input_kind}, {size} px, {len(spec.head_names)} heads): '
                             + '; '.join(diffs[:5]))


def _is_shape(x) -> bool:
  return isinstance(x, tuple) and all(isinstance(d, int) for d in x)


# ----------------------------------------------------------------------------- training checkpoints


def training_manager(directory) -> ocp.CheckpointManager:
  """Orbax manager of a run's training checkpoints (the latest two, for resume)."""
  return ocp.CheckpointManager(pathlib.Path(directory).absolute(),
                               options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


def save_training(manager: ocp.CheckpointManager, step: int, tree, force: bool = False,
                  replace: bool = False) -> None:
  """Saves `tree` at `step`. A step saved already is kept, or with `replace` saved again (the
  end-of-epoch state supersedes a periodic save of the same step)."""
  if manager.latest_step() == step:
    if not replace:
      return
    manager.wait_until_finished()
    manager.delete(step)
  # Host copies: the next step donates (deletes) the device buffers an async save would read.
  manager.save(step, args=ocp.args.StandardSave(distributed.to_host(tree)), force=force)


def restore_training(manager: ocp.CheckpointManager, like, warn=print):
  """The latest intact checkpoint, restored into the structure, shapes and dtypes of `like`.

  A checkpoint that cannot be read (a disk filled or a file damaged after it was written) is
  moved aside to `<checkpoints>/unreadable-<step>` (kept, not deleted) with a warning, and the
  previous one is used: the run loses at most the steps between the two.
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  directory = pathlib.Path(manager.directory)
  moved, first_error = [], None
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # Orbax/tensorstore raise many kinds for damaged files
      first_error = first_error or e
      aside = directory / f'unreadable-{step}'
      warn(f'warning: checkpoint {directory}/{step} cannot be read ({type(e).__name__}: '
           f'{str(e)[:160]}); moving it to {aside} and trying the previous one.')
      (directory / str(step)).rename(aside)
      moved.append((aside, directory / str(step)))
      manager.reload()
      continue
    return restored
  for aside, original in moved:  # none readable: not damage but a mismatch; leave all in place
    aside.rename(original)
  manager.reload()
  raise errors.UserError(
      f'{directory}: no checkpoint there can be restored into this run (first error: '
      f'{type(first_error).__name__}: {str(first_error)[:200]}). Use a new workdir, or delete this '
      'one to start the run again.')
