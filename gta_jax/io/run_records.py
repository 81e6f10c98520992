"""What a finished or started run recorded: its config.json, read back under the current field names,
and which config file makes a run of a given name (for hints that name the right command)."""
import json
import os
import pathlib

import ml_collections

from gta_jax import chains
from gta_jax import errors
from gta_jax.data import pipeline
from gta_jax.io import writers

RUNS_ROOT = 'runs'  # where launch.py puts a run by default: runs/<config.name>


def resolve_run(value: str, workdir=None) -> str:
  """A lineage field (config.init.from_run or init.primary) -> the path it names. A bare run name
  (no '/') is a run beside this one, in the runs root: the folder holding `workdir` (runs/ by
  default), so phases run with --workdir=/scratch/x/phase2_synthetic find
  /scratch/x/phase1_synthetic with no init.* override. A path (with a '/') is taken as given."""
  if not value or '/' in value or value.endswith('.h5'):
    return value
  root = pathlib.Path(workdir).parent if workdir is not None else pathlib.Path(RUNS_ROOT)
  return str(root / value)


def resolve_lineage(config, workdir=None):
  """`config` with init.from_run and init.primary resolved by resolve_run (a copy)."""
  config = config.copy_and_resolve_references()
  config.init.from_run = resolve_run(config.init.from_run, workdir)
  config.init.primary = resolve_run(config.init.primary, workdir)
  return config


def upgrade_record(record: dict) -> dict:
  """A stored config.json -> the current field names (runs written before config.sources,
  config.model.family and config.evals existed)."""
  record = json.loads(json.dumps(record))
  model = record.setdefault('model', {})
  if 'heads' in record:
    record['sources'] = record.pop('heads')
  if 'arch' in model:
    arch = model.pop('arch')
    if arch == 'proposed':
      model['family'] = 'heads' if record.get('sources') else 'primary'
      record['task'] = 'attribution' if record.get('sources') else 'detection'
    else:
      model['family'] = arch
  test_sets = record.get('eval', {}).pop('test_sets', None)
  if test_sets is not None:
    record.setdefault('evals', {}).setdefault('test', {})['modes'] = test_sets
  return record


def _tuples(value):
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def read_record(path) -> dict:
  """A run's JSON record (config.json) -> its object; unreadable or not an object is a clear
  error naming the file, not a traceback."""
  path = pathlib.Path(path)
  try:
    record = json.loads(path.read_text())
  except OSError as e:
    raise errors.ConfigError(f'{path}: cannot be read ({e.strerror}).') from None
  except (UnicodeDecodeError, ValueError) as e:
    raise errors.ConfigError(f'{path}: not valid JSON ({e}); the run\'s record is damaged.'
                             ) from None
  if not isinstance(record, dict):
    raise errors.ConfigError(f'{path}: holds no JSON object; the run\'s record is damaged.')
  return record


def load_run_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
  """A run's stored config over the current base config (fields added since keep their defaults)."""
  record = upgrade_record(read_record(pathlib.Path(workdir) / 'config.json'))
  config = chains.load_config_file(str(chains.ROOT / 'configs' / 'common.py'))
  with config.unlocked():
    config.update(_tuples(record))
  return config


def read_results(results_file: pathlib.Path) -> dict | None:
  """A finished run's results/metrics.json, or None when there is none or it cannot be read (a
  write cut short before writes were atomic): the run then evaluates again, with a warning."""
  if not results_file.is_file():
    return None
  try:
    results = json.loads(results_file.read_text())
  except (OSError, UnicodeDecodeError, ValueError) as e:
    writers.log(f'warning: {results_file} cannot be read ({e}); evaluating the run again.')
    return None
  if not isinstance(results, dict):
    writers.log(f'warning: {results_file} holds no results object; evaluating the run again.')
    return None
  return results


# Fields a resumed run may change: where the data lives, how often it logs and saves, how it
# evaluates, and how convolutions are lowered (same function, other speed).
RESUMABLE_CHANGES = ('data.data_dir', 'data.workers', 'log_every_steps', 'checkpoint_every_steps',
                     'eval.batch_size', 'evals', 'model.conv_impl', 'workdir')


LINEAGE_FIELDS = ('init.from_run', 'init.primary')


def comparable_settings(record: dict, ignore=()) -> dict:
  """A config record -> {dotted key: value} under the current field names, less what a resume
  may change (RESUMABLE_CHANGES) and `ignore`d keys (with their subkeys), the lineage fields as
  real paths: the same run reached as runs/x, /abs/runs/x or through a link is the same run
  (resolve_run builds them from the workdir as it was given)."""
  dropped = RESUMABLE_CHANGES + tuple(ignore)
  return {k: (os.path.realpath(v) if k in LINEAGE_FIELDS and isinstance(v, str) and v else v)
          for k, v in chains.flat_items(upgrade_record(record))
          if not any(k == f or k.startswith(f + '.') for f in dropped)}


def check_resume_config(workdir, config, finished: bool = False) -> None:
  """A resumed run must train as it started: refuses a changed training setting, naming it.

  Changing the data, model, optimiser or phase under a half-trained checkpoint would continue a
  different experiment under the old name (and overwrite the config.json that describes it).
  A finished run (`finished`) is checked the same way: "nothing to do" for another phase's or
  another setting's config would pass off this run's results as that config's.
  """
  stored_file = pathlib.Path(workdir) / 'config.json'
  if not stored_file.is_file():
    return
  stored = comparable_settings(read_record(stored_file))
  current = comparable_settings(json.loads(config.to_json_best_effort()))
  changed = sorted(k for k in set(stored) | set(current)
                   if stored.get(k, '<unset>') != current.get(k, '<unset>')
                   and k in stored)  # fields added since the run started keep their defaults
  if changed:
    details = '; '.join(f'config.{k}: {stored.get(k)!r} when it started, now '
                        f'{current.get(k, "<unset>")!r}' for k in changed[:6])
    if 'data.augment_on' in changed:
      details += (f' (to go on with its data path, pass --config.data.augment_on='
                  f'{stored["data.augment_on"]})')
    if finished:
      raise errors.ConfigError(
          f'{workdir} holds a finished run trained with other settings ({details}); its results '
          'are not this config\'s. Give this config its own workdir (--workdir=...), or delete '
          'that run to retrain it.')
    raise errors.ConfigError(
        f'{workdir} holds a run started with other settings ({details}). Resuming would mix two '
        'experiments: run the original command to resume it, or give this one a new workdir '
        '(--config.workdir=...).')


def config_for_run(run_dir) -> str | None:
  """runs/phase2_ganfp_jpeg -> 'configs/phase2_ganfp.py:jpeg' (the config whose default workdir
  it is), or None when no config file makes a run of that name."""
  name = pathlib.Path(run_dir).name
  configs = chains.ROOT / 'configs'
  if (configs / f'{name}.py').is_file():
    return f'configs/{name}.py'
  base, _, variant = name.rpartition('_')
  if base and (configs / f'{base}.py').is_file():
    return f'configs/{base}.py:{variant}'
  return None


def check_lineage(config, image_size: int, run_dir, spec, role: str) -> None:
  """A run that continues from (role 'config.init.from_run') or builds heads on (role
  'config.init.primary') the model in `run_dir` must share its input kind, image size and,
  where `run_dir` is a run with a config.json, its dataset. Heads on a folder dataset (a new
  generator's images) may build on a primary trained on any other dataset (or folder dataset)
  of their image size."""
  run_dir = pathlib.Path(run_dir)
  where = f'{role}={str(run_dir)!r}'
  if spec.input_kind != config.model.input:
    raise errors.ConfigError(f'{where} takes {spec.input_kind} input but config.model.input='
                             f'{config.model.input!r}.')
  folder = config.data.name == pipeline.FOLDER
  size_error = errors.ConfigError(
      f'{where} was trained on {spec.image_size} px images but {config.data.name}'
      + (f'/{config.data.config}' if folder else '') + f' has {image_size} px images'
      + (f': prepare your folder at its size (gta_jax.prepare --image-size {spec.image_size}, '
         'under another tag).' if folder else '.'))
  if spec.image_size != image_size and (spec.input_kind == 'dct' or role.endswith('from_run')):
    raise size_error
  for recorded in (run_dir / 'config.json', run_dir.parent / 'config.json'):
    if recorded.is_file():
      theirs = upgrade_record(read_record(recorded)).get('data', {})
      other_data = (theirs.get('name') != config.data.name
                    or folder and theirs.get('config') != config.data.config)
      if other_data and folder and role.endswith('primary'):
        if spec.image_size != image_size:  # any dataset's primary, at the folder's image size
          raise size_error
        return
      if theirs.get('name') != config.data.name:
        raise errors.ConfigError(f'{where} was trained on {theirs.get("name")} but '
                                 f'config.data.name={config.data.name!r}.')
      return


# config.data.name -> the dataset part of the phase config file names.
CONFIG_DATASET_NAMES = {'synthetic_fingerprints': 'synthetic', 'ganfp': 'ganfp',
                        'faceshq_plus': 'faceshq'}


def previous_phase_config(config, phase: int) -> str | None:
  """The config of the phase `config` builds on (phase 1 or 2 for this dataset and input kind, or
  this target's phase III), when such a file exists."""
  if phase == 3:
    name = config.name.replace('phase4', 'phase3', 1)
  else:
    dataset = CONFIG_DATASET_NAMES.get(config.data.name, config.data.name)
    name = f'phase{phase}_{dataset}' + ('_dct' if config.model.input == 'dct' else '')
  return f'configs/{name}.py' if (chains.ROOT / 'configs' / f'{name}.py').is_file() else None


def missing_run_hint(run_dir, config, phase: int) -> str:
  """How to make the run `config` needs in `run_dir`: the config whose default workdir has that
  name, else the previous phase's config for this dataset."""
  made_by = config_for_run(run_dir) or previous_phase_config(config, phase)
  if made_by:
    return f'Run it first: python launch.py --config={made_by} --workdir={run_dir}'
  return f'Run phase {phase} first, with --workdir={run_dir}.'
