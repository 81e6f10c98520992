"""Models composed of one primary and heads from any number of runs (the paper's semi-decentralised
design): enrol a generator's head trained later, remove one, combine the heads of separate runs.
No retraining and no data: a head is its weights, its threshold, its open-set calibration and its
provenance, all of which travel with it.

What composing keeps (each checked, each refusal naming both sides):
  - one primary: every head must have been trained on the very weights (the bundles' primary
    digests, sha256 over the weights, must be equal), with the same input kind, image size,
    auxiliary frequency inputs and, for DCT models, the same DCT statistics;
  - distinct head names (an incoming head may be renamed);
  - each head's weights bit for bit (its digest is recorded and checked on every load), its
    verdict threshold, its tpr95 / DOC open-set thresholds (per head, so they compose as they
    are), its temperature and fixed-FPR thresholds (gta_jax/scoring/calibration.py, each with
    the digest of the validation data it was fitted on), and its provenance (run, config,
    dataset build, steps; gta_jax/io/provenance.py);
  - each run's kNN calibration as it was fitted, on that run's heads' features (open_set
    .knn_groups): nothing is refitted, and an image is known when any run's calibration accepts
    it (gta_jax/scoring/openset.py GroupedKnn). Removing a head drops the kNN calibration it
    was fitted with, which described its features too; the other runs' stay.
The primary's threshold and calibration are the base model's. The composed model is an ordinary
bundle.
"""
import dataclasses
import json
import os
import pathlib
import shutil

import numpy as np

from gta_jax import errors
from gta_jax.io import checkpoints
from gta_jax.io import keras_import
from gta_jax.io import outputs
from gta_jax.io import provenance
from gta_jax.scoring import openset
from gta_jax.scoring import verdicts

PER_HEAD_CALIBRATIONS = ('tpr95', 'doc')


@dataclasses.dataclass
class Model:
  """A model in memory: what a bundle holds, with its kNN banks ({file name: array})."""
  spec: checkpoints.ModelSpec
  variables: dict
  dct_stats: tuple | None
  banks: dict
  origin: str  # the path the user named, for messages

  @property
  def head_names(self) -> tuple[str, ...]:
    return self.spec.head_names


def read(path) -> Model:
  """A model bundle, a run workdir holding one in model/, or a release .h5 -> Model; each head's
  provenance is filled from its run's records where the bundle predates them."""
  path = pathlib.Path(path)
  try:
    loaded = keras_import.load_any(path)
  except keras_import.H5ImportError as e:
    raise errors.UsageError(str(e)) from None
  if loaded is None:
    raise errors.UsageError(
        f'{path}: expected a release .h5 file, a model bundle folder (with model.json, written by '
        '`python -m gta_jax.keras_import`, a training run or gta-model), or a run workdir holding '
        'one in model/.')
  spec, variables, stats = loaded
  bundle = next((b for b in (path, path / 'model') if checkpoints.is_model_bundle(b)), None)
  banks = openset.read_knn_banks(bundle, spec) if bundle is not None else {}
  if spec.head_names and 'heads' in variables:
    spec = checkpoints.with_head_digests(dataclasses.replace(spec, head_provenance=tuple(
        record if 'run' in record or 'bundle' in record else {**record, **_origin(spec, k, bundle, path)}
        for k, record in enumerate(spec.head_provenance or ({},) * len(spec.head_names)))), variables)
  return Model(spec, variables, stats, banks, str(path))


def _origin(spec: checkpoints.ModelSpec, k: int, bundle, path) -> dict:
  """Provenance of head k of a bundle written before heads carried their own."""
  epoch = spec.best_epochs[k] if len(spec.best_epochs) == len(spec.head_names) else None
  if bundle is not None and bundle.name == 'model' and (bundle.parent / 'config.json').is_file():
    return provenance.head_origin(bundle.parent, spec.trained_steps, epoch)
  origin = {'bundle': str(pathlib.Path(bundle or path).absolute()), 'source': spec.source,
            'trained_steps': spec.trained_steps}
  return origin if epoch is None else {**origin, 'best_epoch': epoch}


def check_compatible(base: Model, other: Model) -> None:
  """Refuses heads that cannot run on `base`'s primary, naming what differs on both sides."""
  for model in (base, other):
    if model.spec.arch != 'proposed':
      raise errors.UsageError(f'{model.origin} is a {model.spec.arch} baseline; only the proposed '
                              "detector's heads compose.")
  a, b = base.spec, other.spec
  if a.primary_digest != b.primary_digest:
    raise errors.UsageError(
        f'{other.origin}: its heads were trained on the primary {b.primary_digest}, but '
        f'{base.origin} holds the primary {a.primary_digest}. A head works only on the primary it '
        'was trained on (config.init.primary); train it on this one, or compose it with its own.')
  for field, what in (('input_kind', 'input kind'), ('image_size', 'image size'),
                      ('head_frequency_inputs', 'head frequency inputs')):
    if getattr(a, field) != getattr(b, field):
      raise errors.UsageError(f'{other.origin} has {what} {getattr(b, field)!r}, {base.origin} '
                              f'{getattr(a, field)!r}: heads compose only within one kind of model.')
  if a.input_kind == 'dct' and not all(
      np.array_equal(x, y) for x, y in zip(base.dct_stats or (), other.dct_stats or ())):
    raise errors.UsageError(f'{other.origin} and {base.origin} normalise DCT inputs with different '
                            'statistics (dct_stats/): their heads do not see the same features.')


def compose(base: Model, additions: list, renames: dict | None = None) -> Model:
  """`base` (a primary, with or without heads) plus every head of each model in `additions`,
  renamed by `renames` ({old: new}, applied to incoming heads). Nothing is retrained: each head's
  weights, thresholds, calibrations and provenance are carried over unchanged."""
  renames = dict(renames or {})
  parts = [base] + list(additions)
  for other in additions:
    check_compatible(base, other)
    if not other.head_names:
      raise errors.UsageError(f'{other.origin} holds no heads to enrol (a detector alone).')
  incoming = [name for other in additions for name in other.head_names]
  for old in renames:
    if incoming.count(old) != 1:
      raise errors.UsageError(
          f'--rename {old}={renames[old]}: ' + (f'no incoming head is named {old!r}' if old not in incoming
                                                else f'{incoming.count(old)} incoming heads are named {old!r}; '
                                                'enrol them one run at a time'))
  names, owners = list(base.head_names), {n: base.origin for n in base.head_names}
  for other in additions:
    for name in other.head_names:
      new = renames.get(name, name)
      if new in owners:
        raise errors.UsageError(
            f'two heads named {new!r}: one from {owners[new]}, one from {other.origin}. Rename the '
            f'incoming one (--rename {name}=NEW_NAME), or remove the other first.')
      owners[new] = other.origin
      names.append(new)
  return _assemble(base, [(m, list(range(len(m.head_names)))) for m in parts], names)


def remove(model: Model, heads) -> tuple[Model, list[str]]:
  """`model` without the named heads -> (model, notes on calibrations dropped)."""
  unknown = [h for h in heads if h not in model.head_names]
  if unknown:
    raise errors.UsageError(f'{model.origin} has no head named {", ".join(map(repr, unknown))}; '
                            f'its heads: {", ".join(model.head_names) or "none"}.')
  keep = [k for k, name in enumerate(model.head_names) if name not in heads]
  composed = _assemble(model, [(model, keep)], [model.head_names[k] for k in keep])
  dropped = [g for g in openset.knn_records(model.spec) if set(g['heads']) & set(heads)
             and not set(g['heads']) <= set(heads)]
  notes = [f'the kNN calibration fitted with heads {", ".join(g["heads"])} is dropped: it described '
           f'the removed head\'s features too. Heads {", ".join(h for h in g["heads"] if h not in heads)} '
           'keep their tpr95/DOC thresholds; refit their run\'s calibration (gta-openset --fit) and '
           'enrol it again to bring back the kNN score.' for g in dropped]
  return composed, notes


def _assemble(base: Model, selection: list, names: list) -> Model:
  """One model from (model, head indices) pairs, heads named `names` in that order."""
  base_thresholds = verdicts.Thresholds.from_json(base.spec.thresholds)
  heads, provenance_records, thresholds, epochs, calibrations = [], [], [], [], []
  per_head = {m: [] for m in PER_HEAD_CALIBRATIONS}
  groups, banks = [], {}
  position = 0
  for model, indices in selection:
    spec = model.spec
    own = [names[position + i] for i in range(len(indices))]
    renamed = dict(zip((spec.head_names[k] for k in indices), own))
    position += len(indices)
    if not indices:
      continue
    heads += [checkpoints.head_variables(model.variables['heads'], k) for k in indices]
    for k, name in zip(indices, own):
      record = dict(spec.head_provenance[k]) if spec.head_provenance else {}
      if name != spec.head_names[k]:
        record.setdefault('name_in_run', spec.head_names[k])
      provenance_records.append(record)
    thresholds += [verdicts.Thresholds.from_json(spec.thresholds).for_heads(
        len(spec.head_names))[k] for k in indices]
    per_run_epochs = len(spec.best_epochs) == len(spec.head_names)
    epochs += [spec.best_epochs[k] if per_run_epochs else None for k in indices]
    stored = spec.calibration.get('heads') if spec.calibration else None
    calibrations += [stored[k] for k in indices] if stored else [None] * len(indices)
    fitted = spec.open_set or {}
    for method in PER_HEAD_CALIBRATIONS:
      values = fitted.get(method)
      per_head[method] += [values[k] for k in indices] if values else [None] * len(indices)
    for record in openset.knn_records(spec):
      if not set(record['heads']) <= set(renamed) or record['bank'] not in model.banks:
        continue  # fitted with a head left out, or its bank unreadable: not carried
      file = f'open_set_knn_bank_{len(groups)}.npy'
      banks[file] = model.banks[record['bank']]
      groups.append({**record, 'heads': [renamed[h] for h in record['heads']], 'bank': file})
  open_set = {}
  if any(s.spec.open_set for s, _ in selection):
    first = next(s.spec.open_set for s, _ in selection if s.spec.open_set)
    open_set = {k: first[k] for k in ('split', 'mode', 'tpr', 'doc_alpha') if k in first}
    for method, values in per_head.items():
      if values and all(v is not None for v in values):
        open_set[method] = values
    if groups:
      open_set['knn_groups'] = groups
  variables = {'primary': base.variables['primary']}
  if heads:
    variables['heads'] = checkpoints.stack_heads(heads)
  spec = dataclasses.replace(
      base.spec, head_names=tuple(names), composed=True,
      task='attribution' if names else ('detection' if base.spec.task == 'attribution' else base.spec.task),
      best_epochs=tuple(epochs) if epochs and all(e is not None for e in epochs) else (),
      thresholds=verdicts.Thresholds(base_thresholds.fake, tuple(thresholds) if thresholds else (
          base_thresholds.heads if isinstance(base_thresholds.heads, float)
          else verdicts.DEFAULT_THRESHOLD)).to_json(),
      open_set=open_set, head_provenance=tuple(provenance_records),
      calibration=_calibration((base.spec.calibration or {}).get('detection'), calibrations))
  if not names:
    spec = dataclasses.replace(spec, head_frequency_inputs=())
  spec = checkpoints.with_head_digests(spec, variables)
  checkpoints.ModelSpec.from_json(spec.to_json(), f'the model composed from {base.origin}')
  return Model(spec, variables, base.dct_stats, banks, base.origin)


def _calibration(detection: dict | None, heads: list) -> dict:
  """The composed model's calibration: the primary's detector record and each head's own (None
  for a head from a run that fitted none); {} when no output has one."""
  if detection is None and all(h is None for h in heads):
    return {}
  return {'detection': detection, 'heads': heads}


def is_run_bundle(path) -> bool:
  """A training run's own bundle (RUN/model, or RUN itself): never rewritten by composition."""
  path = pathlib.Path(path)
  bundle = path if checkpoints.is_model_bundle(path) else path / 'model'
  return bundle.name == 'model' and any(
      (bundle.parent / name).exists() for name in ('config.json', 'checkpoints', 'metrics.jsonl'))


def read_area(path) -> pathlib.Path:
  """What an output may not be written into, for a model or run a command reads: a run's whole
  workdir for its bundle (RUN/model) or the run itself, else the bundle, folder or file named."""
  path = pathlib.Path(path)
  if path.is_dir() and is_run_bundle(path):
    return path.parent if checkpoints.is_model_bundle(path) else path
  return path


BUNDLE_ENTRIES = ('model.json', 'variables', 'dct_stats')  # and open_set_knn_bank*.npy

# Which bundles a tool may replace: those it wrote itself (its own earlier output).
OWN_BUNDLES = {
    'gta-model': ('composed by gta-model', lambda spec: spec.composed),
    'keras_import': ('imported by keras_import',
                     lambda spec: not spec.composed and spec.trained_steps == 0),
}


def check_target(target, *, tool: str = 'gta-model', replacing=None) -> pathlib.Path:
  """Where `tool` may write a model bundle: a new or empty folder, or a bundle it wrote itself
  (gta-model: a composed model; keras_import: an import), replaced whole. Never a run's own
  bundle or the run, a file, a folder that is not a bundle (whatever its model.json), a bundle
  with other files beside its own (named), or a bundle another tool wrote."""
  target = pathlib.Path(target)
  advice = 'Write the composed model to a new folder (--out DIR).' if tool == 'gta-model' else (
      'Name a new folder.')
  if target.is_dir() and is_run_bundle(target):
    raise errors.UsageError(f'{target} is a training run\'s own model (or the run); it is never '
                            f'rewritten. {advice}')
  if (target.exists() or target.is_symlink()) and not (target.is_dir() and not any(
      target.iterdir())):
    if not target.is_dir():
      raise errors.UsageError(f'{target} exists and is not a model bundle (a file); it is not '
                              f'replaced. {advice}')
    if not checkpoints.is_model_bundle(target):
      shown = ', '.join(sorted(p.name for p in target.iterdir())[:5])
      raise errors.UsageError(f'{target} is not empty and is not a model bundle (it holds '
                              f'{shown}); it is not replaced. {advice}')
    try:
      spec = checkpoints.ModelSpec.from_json(json.loads((target / 'model.json').read_text()),
                                             target / 'model.json')
    except (OSError, ValueError) as e:
      raise errors.UsageError(f'{target} holds a model.json that is not a gta_jax model bundle\'s '
                              f'({e}); it is not replaced. {advice}') from None
    extra = sorted(p.name for p in target.iterdir()
                   if p.name not in BUNDLE_ENTRIES and not p.name.startswith('.')
                   and not (p.name.startswith('open_set_knn_bank') and p.suffix == '.npy'))
    if extra or not (target / 'variables').is_dir():
      raise errors.UsageError(
          f'{target} holds files a model bundle does not ({", ".join(extra[:5]) or "no variables/"}'
          f'); it is not replaced. {advice}')
    what, own = OWN_BUNDLES[tool]
    if not own(spec):
      raise errors.UsageError(
          f'{target} is a model bundle not {what} (' + (
              'composed by gta-model' if spec.composed else 'an import' if not spec.trained_steps
              else 'a copy of a run\'s model') + f'); it is not rewritten. {advice}')
  errors.check_writable_folder(target.parent if target.parent != pathlib.Path('') else '.',
                               'the model\'s folder')
  return target


def save(model: Model, target) -> checkpoints.ModelSpec:
  """Writes `model` as a bundle at `target` (checked with check_target first): built in a staging
  folder beside it, then moved into place, so an interrupted write leaves the old model whole."""
  target = pathlib.Path(target).absolute()
  staging = target.with_name(f'.{target.name}.staging-{os.getpid()}')
  shutil.rmtree(staging, ignore_errors=True)
  try:
    for file, bank in model.banks.items():
      staging.mkdir(parents=True, exist_ok=True)
      np.save(staging / file, np.asarray(bank))
    spec = checkpoints.save_model_bundle(staging, model.spec, model.variables, model.dct_stats)
    outputs.replace_folder(staging, target)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return spec
