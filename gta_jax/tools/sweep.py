"""Runs one config over several training seeds and reports every metric as mean +- std.

python -m gta_jax.sweep --config=configs/quickstart.py --seeds=0,1,2 [--workdir=runs/sweep_quickstart]
python -m gta_jax.sweep --workdir=runs/sweep_quickstart --summarize   (table of finished seeds)

A figure from one run on small data is an anecdote: the seed moves initialisation, shuffling and
augmentation draws, and with them every table. Each seed trains into WORKDIR/seed_<s> with
config.seed = s (a finished seed is skipped, an interrupted one resumes); then every number in
the runs' results/metrics.json is aggregated over the seeds into WORKDIR/summary.json
{metric path: {"mean", "std", "n", "values"}} (std: sample standard deviation, ddof=1), and the
headline metrics are printed. Other --config.<key> overrides apply to every seed.
"""
import json
import math
import pathlib
import time

from absl import flags
from absl import logging
from ml_collections import config_flags

from gta_jax import errors
from gta_jax.io import provenance
from gta_jax.io import run_records
from gta_jax.scoring import metrics
from gta_jax.tools import cli

config_flags.DEFINE_config_file('config', None, 'Config file (path[:smoke]).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Sweep folder (default: runs/sweep_<config.name>).')
flags.DEFINE_list('seeds', ['0', '1', '2'], 'Training seeds (config.seed), comma-separated.')
flags.DEFINE_bool('summarize', False, 'Only aggregate the seeds already finished in --workdir.')

# Leaves printed in the table (every leaf is in summary.json): paths end with one of these.
HEADLINE = ('accuracy', 'f1', 'recall', 'roc_auc', 'multiclass_accuracy', 'cross_seed_recall',
            'external_accuracy', 'false_positive_rate')


def numeric_leaves(tree, prefix: str = ''):
  """{'a': {'b': 0.5, 'c': [1, 2]}} -> ('a/b', 0.5), ('a/c/0', 1.0), ...: every finite number."""
  if isinstance(tree, dict):
    for key, value in tree.items():
      yield from numeric_leaves(value, f'{prefix}{key}/')
  elif isinstance(tree, (list, tuple)):
    for index, value in enumerate(tree):
      yield from numeric_leaves(value, f'{prefix}{index}/')
  elif isinstance(tree, (int, float)) and not isinstance(tree, bool) and math.isfinite(tree):
    yield prefix.rstrip('/'), float(tree)


def aggregate(results_by_seed: dict) -> dict:
  """{seed: results tree} -> {leaf path: {mean, std, n, values}}; a leaf absent (or not finite)
  in some runs is aggregated over the runs that have it, and `n` says how many."""
  values: dict[str, dict] = {}
  for seed, results in results_by_seed.items():
    for path, value in numeric_leaves(results):
      values.setdefault(path, {})[str(seed)] = value
  summary = {}
  for path, by_seed in values.items():
    summary[path] = metrics.mean_and_spread(list(by_seed.values())) | {'values': by_seed}
  return summary


def format_table(summary: dict, headline=HEADLINE) -> str:
  """The headline metrics, one line each; `by_perturbation` subsets (a dozen per perturbed test
  set) stay in summary.json only."""
  rows = [(path, entry) for path, entry in summary.items()
          if path.rsplit('/', 1)[-1] in headline and entry['n'] > 0
          and '/by_perturbation/' not in path]
  width = max((len(p) for p, _ in rows), default=10)
  lines = [f'{"metric":<{width}}  mean +- std (n)']
  lines += [f'{path:<{width}}  {e["mean"]:.3f} +- {e["std"]:.3f} ({e["n"]})' for path, e in rows]
  return '\n'.join(lines)


# Config fields that may differ between the seeds of one sweep besides what a resumed run may
# change: the seed, and where each run's lineage lies (each seed's chain builds on its own runs).
SEED_FIELDS = ('seed', 'init.from_run', 'init.primary')


def _settings(run_dir: pathlib.Path) -> dict | None:
  """A run's config.json as {dotted key: value}, less what may differ between seeds."""
  record_file = run_dir / 'config.json'
  if not record_file.is_file():
    return None
  return run_records.comparable_settings(run_records.read_record(record_file), ignore=SEED_FIELDS)


def check_one_config(workdir: pathlib.Path, phases_by_seed: dict) -> None:
  """Refuses to aggregate seeds whose runs were trained with other settings (a sweep's folder
  reused for another config, or a seed added with other overrides), naming the seed and keys."""
  reference = {}
  for seed, phases in phases_by_seed.items():
    for phase in phases:
      settings = _settings(workdir / f'seed_{seed}' / phase)
      if settings is None:
        continue
      first_seed, first = reference.setdefault(phase, (seed, settings))
      # A field only one record has was added to the configs between the two runs (it kept its
      # default in the older one): not a difference, as for a resume.
      changed = sorted(k for k in set(first) & set(settings) if first[k] != settings[k])
      if changed:
        where = '' if phase == '.' else f' ({phase})'
        details = '; '.join(f'config.{k}: {first[k]!r} in seed_{first_seed}, '
                            f'{settings[k]!r} in seed_{seed}' for k in changed[:5])
        raise errors.ConfigError(
            f'{workdir}: seed_{seed}{where} was trained with other settings than '
            f'seed_{first_seed} ({details}); a sweep averages the seeds of one config. Move the '
            'other runs out, or give each config its own --workdir.')


def finished_results(workdir: pathlib.Path) -> dict:
  """{seed: results} of every WORKDIR/seed_<s> holding finished results (a chain: its
  finished phases); seeds trained with other settings than the others are refused."""
  found, phases_by_seed = {}, {}
  for run in sorted(workdir.glob('seed_*')):
    seed = run.name[len('seed_'):]
    files = sorted(run.glob('**/results/metrics.json'))
    by_phase = {}
    for f in files:
      results = run_records.read_results(f)
      if results is not None:
        by_phase[str(f.parent.parent.relative_to(run))] = results
    if not by_phase:
      continue
    phases_by_seed[seed] = list(by_phase)
    # One run: its metrics as they are; a chain: keyed by phase (e.g. phase3_synthetic/...).
    found[seed] = by_phase['.'] if list(by_phase) == ['.'] else by_phase
  check_one_config(workdir, phases_by_seed)
  return found


def provenance_by_run(workdir: pathlib.Path) -> dict:
  """{seed_<s>/<phase>: provenance record} of every run under the sweep that wrote one."""
  return {str(f.parent.relative_to(workdir)): json.loads(f.read_text())
          for f in sorted(workdir.glob('seed_*/**/provenance.json'))}


def parse_seeds(values) -> list[int]:
  try:
    seeds = [int(v) for v in values]
  except ValueError:
    raise errors.UsageError(f'--seeds={",".join(values)}: give whole numbers, e.g. --seeds=0,1,2') from None
  if any(seed < 0 for seed in seeds):
    raise errors.UsageError(f'--seeds={",".join(values)}: seeds are whole numbers >= 0')
  if len(set(seeds)) != len(seeds) or not seeds:
    raise errors.UsageError(f'--seeds={",".join(values)}: give distinct seeds, e.g. --seeds=0,1,2')
  return seeds


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from gta_jax import train
  from gta_jax.io.writers import log
  from gta_jax.io.writers import write_text_atomic
  config = flags.FLAGS.config
  if flags.FLAGS.workdir:
    workdir = pathlib.Path(flags.FLAGS.workdir)
  elif config is not None:
    workdir = pathlib.Path('runs') / f'sweep_{config.name}'
  else:
    raise errors.UsageError('give --config (to run seeds) or --workdir (with --summarize)')
  if not flags.FLAGS.summarize:
    if config is None:
      raise errors.UsageError('--config is required unless --summarize')
    seeds = parse_seeds(flags.FLAGS.seeds)
    started = time.monotonic()
    for done, seed in enumerate(seeds):
      seeded = config.copy_and_resolve_references()
      with seeded.unlocked():
        seeded.seed = seed
      left = ''
      if done:
        per_seed = (time.monotonic() - started) / done
        left = f', about {per_seed * (len(seeds) - done) / 60:.1f} min left for the rest'
      log(f'=== seed {seed} ({done + 1}/{len(seeds)}{left}) -> {workdir / f"seed_{seed}"}')
      train.train_and_evaluate(seeded, workdir / f'seed_{seed}')
  results = finished_results(workdir)
  if not results:
    raise errors.MissingRunError(f'{workdir} holds no finished seed (seed_<s>/**/results/metrics.json)')
  summary = aggregate(results)
  write_text_atomic(workdir / 'summary.json', json.dumps(summary, indent=2, allow_nan=False) + '\n')
  print(f'{len(results)} seed(s): {", ".join(results)}')
  print(format_table(summary))
  print(f'wrote {workdir / "summary.json"}')
  records = provenance_by_run(workdir)
  warning = provenance.compare_builds(records)
  write_text_atomic(workdir / 'provenance.json',
                    json.dumps({'runs': records, 'warning': warning}, indent=2) + '\n')
  if warning:
    print(f'warning: {warning}')


def run() -> None:
  cli.run(main)


if __name__ == '__main__':
  run()
