"""Put runs side by side as the paper does: tables, training curves, confusion matrices, CAM grids.

python -m gta_jax.report runs/quickstart/phase1_synthetic runs/quickstart/phase2_synthetic ... --out report/ \
    [--overwrite]

Writes detection.{md,csv} (detection before/after augmentation-aware retraining), heads.{md,csv}
(per-head attribution), multiclass.{md,csv}, by_perturbation.{md,csv} (F1 on the images each
perturbation of a test set touched or spared), calibration.{md,csv} (ECE, NLL, Brier as scored
and after each output's temperature; TPR at 1%/5% FPR with the thresholds chosen on validation;
the test-chosen best F1, an oracle), reliability.png (reliability diagrams of the clean test
set), curves.png (loss per epoch, Figure 5 style),
confusion_<run>.png, and cams_<run>_<source>.png (16 test images per source with their scores,
Figures 6-8 style), and report.json (which folder each run name stands for, and the files).

A run is named by the shortest end of its path no other run shares (runs/a/phase1 and
runs/b/phase1: a/phase1 and b/phase1; `-` for `/` in file names). --out is new, empty or an
earlier report's folder, which this one replaces whole; never inside a run; one holding other
files only with --overwrite. Every file is written to a temporary name and renamed into place.
"""
import argparse
import csv
import os
import pathlib
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gta_jax import errors  # noqa: E402
from gta_jax import evaluators  # noqa: E402
from gta_jax.data.images import printable  # noqa: E402
from gta_jax.data import loader  # noqa: E402
from gta_jax.data import pipeline  # noqa: E402
from gta_jax.io import outputs  # noqa: E402
from gta_jax.io import run_records  # noqa: E402
from gta_jax.io import writers  # noqa: E402
from gta_jax.scoring import inference  # noqa: E402
from gta_jax.scoring import saliency  # noqa: E402
from gta_jax.tools import cli  # noqa: E402

TOOL = 'report'
GRID_IMAGES = 16


def expand_chain(workdir: pathlib.Path) -> list[pathlib.Path]:
  """A chain's workdir (the quickstart's runs/quickstart) -> its phases' workdirs, in order; any
  other workdir -> itself."""
  if (workdir / 'results' / 'metrics.json').is_file() or not workdir.is_dir():
    return [workdir]
  phases = sorted(p for p in workdir.iterdir() if (p / 'results' / 'metrics.json').is_file())
  return phases or [workdir]


def run_names(workdirs) -> list[str]:
  """Each run's name: the shortest suffix of its path that no other run here shares (runs/a/phase1
  and runs/b/phase1 -> a/phase1, b/phase1; a run alone -> its folder's name), so rows and files
  never mix two runs."""
  parts = [pathlib.Path(os.path.abspath(w)).parts for w in workdirs]
  lengths = [1] * len(parts)
  while True:
    names = ['/'.join(p[-k:]) for p, k in zip(parts, lengths)]
    shared = {n for n in names if names.count(n) > 1}
    grow = [i for i, n in enumerate(names) if n in shared and lengths[i] < len(parts[i])]
    if not grow:
      return names
    for i in grow:
      lengths[i] += 1


def load_run(workdir: pathlib.Path, name: str | None = None) -> dict:
  metrics_file = workdir / 'results' / 'metrics.json'
  if not metrics_file.is_file():
    raise errors.MissingRunError(f'{workdir}: no results/metrics.json; finish or evaluate the run first '
                            '(python -m gta_jax.evaluate --workdir ...).')
  metrics = run_records.read_results(metrics_file)
  if metrics is None:  # empty or torn: read_results warned
    raise errors.ConfigError(f'{metrics_file}: cannot be read; evaluate the run again '
                             f'(python -m gta_jax.evaluate --workdir {workdir}).')
  config = run_records.upgrade_record(run_records.read_record(workdir / 'config.json'))
  name = name or workdir.name
  return {'name': name, 'file_name': name.replace('/', '-'), 'workdir': workdir, 'config': config,
          'metrics': metrics, 'values': dict(evaluators.flatten(metrics))}


def _test_sets(runs) -> list[str]:
  """The test sets any run has metrics for, in the canonical order."""
  present = {name.split('/')[0] for run in runs for name in run['values']}
  return [m for m in pipeline.TEST_SET_SEEDS if m in present]


def _heads(run) -> list[str]:
  """Head names, from the metric names '<set>/heads/<head>/...' of the clean test set."""
  heads = []
  for name in run['values']:
    parts = name.split('/')
    if len(parts) > 3 and parts[0] == 'clean' and parts[1] == 'heads' and parts[2] not in heads:
      heads.append(parts[2])
  return heads


# Each table: (header, metric name) columns; '{set}' expands over the test sets present and
# '{head}' names the row's head. Rows: one per run (per head for the heads table).
DETECTION_COLUMNS = [('{set} acc', '{set}/detection/accuracy'), ('{set} f1', '{set}/detection/f1'),
                     ('clean roc_auc', 'clean/detection/roc_auc'),
                     ('external acc', 'clean/detection/external_accuracy')]
HEADS_COLUMNS = [('{set} precision', '{set}/heads/{head}/precision'),
                 ('{set} recall', '{set}/heads/{head}/recall'), ('{set} f1', '{set}/heads/{head}/f1'),
                 ('clean roc_auc', 'clean/heads/{head}/roc_auc'),
                 ('clean CR', 'clean/heads/{head}/self_contradiction/rate'),
                 ('external acc', 'clean/heads/{head}/external_accuracy'),
                 ('cross-seed recall', 'cross_seed/{head}/recall')]
MULTICLASS_COLUMNS = [('{set} acc', '{set}/multiclass/accuracy'),
                      ('clean failed', 'clean/multiclass/failed_attributions'),
                      ('clean multiple', 'clean/multiclass/multiple_attributions')]


def _expand(columns, sets):
  """Column templates -> [(header, metric name template)], '{set}' expanded set-major per group."""
  expanded, group = [], []
  for header, name in columns + [(None, None)]:
    if name is not None and '{set}' in name:
      group.append((header, name))
      continue
    expanded += [(h.format(set=m), n.replace('{set}', m)) for m in sets for h, n in group]
    group = []
    if name is not None:
      expanded.append((header, name))
  return expanded


def _table(runs, columns, key_header, rows_of):
  columns = _expand(columns, _test_sets(runs))
  header = key_header + [h for h, _ in columns]
  rows = [keys + [values.get(name.format(head=head)) for _, name in columns]
          for run in runs for keys, head, values in rows_of(run)]
  return header, rows


def detection_table(runs):
  def rows_of(run):  # a heads run's detection is its frozen primary's, reported by that run
    if not run['config'].get('sources') and 'clean/detection/accuracy' in run['values']:
      yield [run['name']], None, run['values']
  return _table(runs, DETECTION_COLUMNS, ['run'], rows_of)


def heads_table(runs):
  def rows_of(run):
    for head in _heads(run):
      yield [run['name'], head], head, run['values']
  return _table(runs, HEADS_COLUMNS, ['run', 'head'], rows_of)


def multiclass_table(runs):
  def rows_of(run):
    if 'clean/multiclass/accuracy' in run['values']:
      yield [run['name']], None, run['values']
  return _table(runs, MULTICLASS_COLUMNS, ['run'], rows_of)


def perturbation_table(runs):
  """F1 of each head (and of a detection run's detector) on the images each perturbation of a
  test set touched or spared (metrics.json's `by_perturbation`): where a robustness figure is
  lost. Columns: '<set> <subset> f1' for every subset any run has, sets in canonical order."""
  subsets = []
  for run in runs:
    for name in run['values']:
      parts = name.split('/')
      if len(parts) > 3 and parts[1] == 'by_perturbation' and (parts[0], parts[2]) not in subsets:
        subsets.append((parts[0], parts[2]))
  order = _test_sets(runs)
  subsets.sort(key=lambda pair: order.index(pair[0]))
  header = ['run', 'output'] + [f'{test_set} {subset} f1' for test_set, subset in subsets]
  rows = []
  for run in runs:
    outputs = [] if run['config'].get('sources') else [('detection', 'detection')]
    outputs += [(head, f'heads/{head}') for head in _heads(run)]
    for label, path in outputs:
      row = [run['values'].get(f'{test_set}/by_perturbation/{subset}/{path}/f1')
             for test_set, subset in subsets]
      if any(value is not None for value in row):
        rows.append([run['name'], label] + row)
  return header, rows


# Per output (a detection run's detector, each head): calibration of the scores as they are and
# after the temperature fitted on validation, and the operating points chosen on validation.
CALIBRATION_COLUMNS = [
    ('clean ece', 'clean/{output}/ece'), ('clean nll', 'clean/{output}/nll'),
    ('clean brier', 'clean/{output}/brier'), ('T', 'clean/{output}/calibrated/temperature'),
    ('clean ece (T)', 'clean/{output}/calibrated/ece'),
    ('clean nll (T)', 'clean/{output}/calibrated/nll'),
    ('{set} tpr@fpr1%', '{set}/{output}/tpr_at_fpr_1pct/tpr'),
    ('{set} fpr@1%', '{set}/{output}/tpr_at_fpr_1pct/fpr'),
    ('clean tpr@fpr5%', 'clean/{output}/tpr_at_fpr_5pct/tpr'),
    ('clean fpr@5%', 'clean/{output}/tpr_at_fpr_5pct/fpr'),
    ('clean best f1 (oracle)', 'clean/{output}/best_f1')]


def _outputs(run) -> list[tuple[str, str]]:
  """(label, metric path) of each output a run reports as its own: a heads run's detector is its
  frozen primary's, reported by that run."""
  own = [] if run['config'].get('sources') else [('detector', 'detection')]
  if own and 'clean/detection/accuracy' not in run['values']:
    own = []
  return own + [(head, f'heads/{head}') for head in _heads(run)]


def calibration_table(runs):
  """Calibration and operating points per output (docs/results_format.md): the threshold of
  'tpr@fpr1%' was chosen on the validation split and 'fpr@1%' is what it gave on the test set;
  'best f1 (oracle)' uses a threshold read off the test set itself."""
  def rows_of(run):
    for label, path in _outputs(run):
      yield [run['name'], label], path, run['values']
  columns = [(h, n.replace('{output}', '{head}')) for h, n in CALIBRATION_COLUMNS]
  header, rows = _table(runs, columns, ['run', 'output'], rows_of)
  return header, [row for row in rows if any(v is not None for v in row[2:])]  # results of before


def _clean_figures(run, path: str) -> dict:
  """A run's clean-test-set figures of one output ('detection' or 'heads/<name>')."""
  figures = run['metrics'].get('clean', {})
  for part in path.split('/'):
    figures = figures.get(part) if isinstance(figures, dict) else None
  return figures if isinstance(figures, dict) else {}


def plot_reliability(runs, out: outputs.Folder) -> None:
  """reliability.png: per run, each output's equal-mass bins on the clean test set (mean score
  against the share positive), as it is (solid) and after its temperature (dashed)."""
  panels = [(run, _outputs(run)) for run in runs]
  panels = [(run, outs) for run, outs in panels
            if any(_clean_figures(run, path).get('reliability') for _, path in outs)]
  if not panels:
    return
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.0), squeeze=False)
  for ax, (run, outs) in zip(axes[0], panels):
    ax.plot([0, 1], [0, 1], color='0.6', lw=0.8)
    for index, (label, path) in enumerate(outs):
      figures = _clean_figures(run, path)
      calibrated = figures.get('calibrated') or {}
      if figures.get('reliability'):
        table = figures['reliability']
        ax.plot(table['score'], table['frequency'], '-o', color=f'C{index}', ms=3,
                label=f'{label} ECE {figures["ece"]:.3f}')
      if calibrated.get('reliability'):
        table = calibrated['reliability']
        ax.plot(table['score'], table['frequency'], '--', color=f'C{index}',
                label=f'{label} T={calibrated["temperature"]:.2f} ECE {calibrated["ece"]:.3f}')
    ax.set_title(f'{run["name"]}: clean test', fontsize=10)
    ax.set_xlabel('mean score (equal-mass bins)')
    ax.set_ylabel('share positive')
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
  fig.tight_layout()
  with out.writing('reliability.png') as staging:
    fig.savefig(staging, dpi=110, format='png')
  plt.close(fig)


def _fmt(value) -> str:
  return '-' if value is None else f'{value:.4f}' if isinstance(value, float) else str(value)


def write_table(out: outputs.Folder, name: str, title: str, header, rows) -> None:
  if not rows:
    return
  with out.writing(f'{name}.csv') as staging, open(staging, 'w', newline='') as f:
    csv.writer(f).writerows([header] + [[_fmt(v) for v in row] for row in rows])
  lines = [f'### {title}', '', '| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(_fmt(v) for v in row) + ' |' for row in rows]
  with out.writing(f'{name}.md') as staging:
    staging.write_text('\n'.join(lines) + '\n')


def epoch_losses(workdir: pathlib.Path) -> dict:
  """-> {'epochs': [...], 'val': {output: [...]}, 'train': {output: [...]}} from metrics.jsonl."""
  records = writers.read_json_lines(workdir / 'metrics.jsonl')  # a torn last line: dropped
  epochs, val, train, pending = [], {}, {}, {}
  for record in records:
    if 'epoch' in record:
      epochs.append(int(record['epoch']))
      for key, value in record.items():
        if key.startswith('val/loss_'):
          val.setdefault(key[9:], []).append(value)
      for key, values in pending.items():
        train.setdefault(key, []).append(float(np.mean(values)) if values else np.nan)
      pending = {}
    else:
      for key, value in record.items():
        if key.startswith('train/loss_'):
          pending.setdefault(key[11:], []).append(value)
  return {'epochs': epochs, 'val': val, 'train': train}


def plot_curves(runs, out: outputs.Folder) -> None:
  fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.4), squeeze=False)
  for ax, run in zip(axes[0], runs):
    losses = epoch_losses(run['workdir'])
    names = list(run['config'].get('sources') or []) or ['detector']
    for index, name in enumerate(names):
      key = str(index)
      color = f'C{index}'
      if key in losses['val']:
        ax.plot(losses['epochs'], losses['val'][key], '-o', color=color, ms=3, label=f'{name} val')
      if key in losses['train']:
        ax.plot(losses['epochs'][:len(losses['train'][key])], losses['train'][key], '--',
                color=color, label=f'{name} train')
    ax.set_title(run['name'], fontsize=10)
    ax.set_xlabel('epoch')
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel('binary cross-entropy')
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # a run that logged no loss has no curve
      ax.legend(fontsize=7)
  fig.tight_layout()
  with out.writing('curves.png') as staging:
    fig.savefig(staging, dpi=110, format='png')
  plt.close(fig)


def plot_confusion(run, out: outputs.Folder) -> None:
  multiclass = run['metrics'].get('clean', {}).get('multiclass')
  if not multiclass:
    return
  matrix = np.asarray(multiclass['confusion_matrix'])
  names = ['real'] + list(run['config']['sources'])
  names += ['other'] * (len(multiclass['classes']) - len(names))  # sources with no output
  fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2, 1.0 * len(names) + 1.5))
  rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  image = ax.imshow(rates, cmap='Blues', vmin=0, vmax=1)
  for i in range(len(names)):
    for j in range(len(names)):
      ax.text(j, i, f'{matrix[i, j]}\n{100 * rates[i, j]:.0f}%', ha='center', va='center',
              fontsize=8, color='white' if rates[i, j] > 0.5 else 'black')
  ax.set_xticks(range(len(names)), names, rotation=30, ha='right')
  ax.set_yticks(range(len(names)), names)
  ax.set_xlabel('predicted (no claim = real)')
  ax.set_ylabel('true source')
  ax.set_title(f'{run["name"]}: clean, accuracy {multiclass["accuracy"]:.3f}', fontsize=10)
  fig.colorbar(image, ax=ax, fraction=0.046, label='share of row')
  fig.tight_layout()
  with out.writing(f'confusion_{run["file_name"]}.png', run['name']) as staging:
    fig.savefig(staging, dpi=110, format='png')
  plt.close(fig)


def cam_grids(run, out: outputs.Folder, data_dir: str | None) -> None:
  """For each source: 16 test images, each with the map of the output that concerns it."""
  if run['config']['model']['family'] not in ('primary', 'heads'):
    return  # a baseline: attribute scores the proposed model
  model = inference.load_model(run['workdir'])
  config = run_records.load_run_config(run['workdir'])
  if data_dir:
    config.data.data_dir = data_dir
  source = loader.open_dataset(config.data, config.model.input).source('test')
  by_source: dict[str, list] = {}
  for index in range(len(source)):
    record = source[index]
    name = record['source'].decode() if isinstance(record['source'], bytes) else record['source']
    if len(by_source.setdefault(name, [])) < GRID_IMAGES:
      by_source[name].append(record['image'])
  heads = list(model.spec.head_names)
  for name, images in by_source.items():
    prepared = [inference.prepare_input(model, image) for image in images]
    x = np.stack([p[0] for p in prepared])
    p_fake, p_heads, maps, _ = inference.score_batch(model.variables, x,
                                                  input_kind=model.spec.input_kind,
                                                  num_heads=len(heads), with_saliency=True)
    p_fake, p_heads, maps = np.asarray(p_fake), np.asarray(p_heads), np.asarray(maps)
    output = heads.index(name) + 1 if name in heads else 0
    cells = []
    for row, (_, shown, _) in enumerate(prepared):
      background = shown if model.spec.input_kind == 'pixel' else saliency.spectrum_image(shown)
      score = p_fake[row] if output == 0 else p_heads[output - 1, row]
      label = f'{"fake" if output == 0 else heads[output - 1]}:{100 * score:.0f}%'
      cells.append(saliency.overlay(background, maps[output, row], label, 'minmax'))
    while len(cells) % 4:
      cells.append(np.zeros_like(cells[0]))
    grid = np.concatenate([np.concatenate(cells[i:i + 4], axis=1)
                           for i in range(0, len(cells), 4)], axis=0)
    from PIL import Image
    with out.writing(f'cams_{run["file_name"]}_{name}.png', run['name']) as staging:
      Image.fromarray(grid).save(staging, format='PNG')


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m gta_jax.report', description=__doc__.split('\n')[0])
  parser.add_argument('runs', nargs='+', help='run workdirs')
  parser.add_argument('--out', required=True,
                      help='the report\'s folder: new, empty, or an earlier report\'s (replaced '
                           'whole); never inside a run')
  parser.add_argument('--data-dir', help="override the runs' TFDS data_dir (for the CAM grids)")
  parser.add_argument('--no-cams', action='store_true', help='skip the CAM grids')
  parser.add_argument('--overwrite', action='store_true',
                      help='write into a --out folder that holds files report did not write '
                           '(those of an output\'s name are replaced)')
  return parser


MANIFEST = 'report.json'  # in --out: {"runs": {name: workdir}, "files": {file: run or null}}


def run(args) -> int:
  given = {}  # {absolute path: as given}; a run named twice (alone and in its chain) counts once
  for chain in args.runs:
    for workdir in expand_chain(pathlib.Path(chain)):
      given.setdefault(pathlib.Path(os.path.abspath(workdir)), workdir)
  runs = [load_run(workdir, name) for workdir, name in zip(given.values(), run_names(given))]
  out = outputs.check_folder(args.out, tool=TOOL, flag='--out', manifest=MANIFEST,
                             overwrite=args.overwrite, read=list(given))  # before any model loads
  out.extra = {'runs': {run['name']: printable(os.path.abspath(run['workdir'])) for run in runs}}
  write_table(out, 'detection', 'Detection (positive = fake)', *detection_table(runs))
  write_table(out, 'heads', 'Attribution heads (positive = the head\'s source)', *heads_table(runs))
  write_table(out, 'multiclass', 'Multiclass (failed attribution = real)', *multiclass_table(runs))
  write_table(out, 'by_perturbation', 'F1 on the images each perturbation touched or spared',
              *perturbation_table(runs))
  write_table(out, 'calibration', 'Calibration (ECE over 15 equal-mass bins; T: temperature '
              'fitted on validation) and TPR at 1%/5% FPR, thresholds chosen on validation',
              *calibration_table(runs))
  plot_curves(runs, out)
  plot_reliability(runs, out)
  for run in runs:
    plot_confusion(run, out)
    if not args.no_cams:
      cam_grids(run, out, args.data_dir)
  out.remove_stale()  # an earlier report's files that this one did not write again
  print(f'wrote {", ".join(sorted(out.files))} to {args.out} ({MANIFEST} names each run\'s '
        'folder)')
  return cli.OK


def main(argv=None) -> int:
  return cli.run_tool(run, build_parser().parse_args(argv))


if __name__ == '__main__':
  sys.exit(main())
