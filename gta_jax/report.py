"""Put runs side by side as the paper does: tables, training curves, confusion matrices, CAM grids.

python -m gta_jax.report runs/quickstart/phase1_synthetic runs/quickstart/phase2_synthetic ... --out report/

Writes detection.{md,csv} (detection before/after augmentation-aware retraining), heads.{md,csv}
(per-head attribution), multiclass.{md,csv}, curves.png (loss per epoch, Figure 5 style),
confusion_<run>.png, and cams_<run>_<source>.png (16 test images per source with their scores,
Figures 6-8 style).
"""
import argparse
import csv
import json
import pathlib
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gta_jax import attribute, input_pipeline, saliency  # noqa: E402

GRID_IMAGES = 16


def load_run(workdir: pathlib.Path) -> dict:
  metrics_file = workdir / 'results' / 'metrics.json'
  if not metrics_file.is_file():
    raise FileNotFoundError(f'{workdir}: no results/metrics.json; finish or evaluate the run first '
                            '(python -m gta_jax.evaluate --workdir ...).')
  return {'name': workdir.name, 'workdir': workdir,
          'config': json.loads((workdir / 'config.json').read_text()),
          'metrics': json.loads(metrics_file.read_text())}


def _test_sets(runs) -> list[str]:
  order = list(input_pipeline.TEST_SET_SEEDS)
  present = {m for run in runs for m in run['metrics'] if m in order}
  return [m for m in order if m in present]


def _fmt(value) -> str:
  return '-' if value is None else f'{value:.4f}' if isinstance(value, float) else str(value)


def detection_table(runs):
  sets = _test_sets(runs)
  header = ['run'] + [f'{m} {k}' for m in sets for k in ('acc', 'f1')] + ['clean roc_auc', 'external acc']
  rows = []
  for run in runs:
    metrics = run['metrics']
    if run['config'].get('heads') or 'detection' not in metrics.get('clean', {}):
      continue  # a heads run's detection is its frozen primary's, reported by that run
    row = [run['name']]
    for m in sets:
      d = metrics.get(m, {}).get('detection', {})
      row += [d.get('accuracy'), d.get('f1')]
    clean = metrics['clean']['detection']
    rows.append(row + [clean.get('roc_auc'), clean.get('external_accuracy')])
  return header, rows


def heads_table(runs):
  sets = _test_sets(runs)
  header = ['run', 'head'] + [f'{m} {k}' for m in sets for k in ('precision', 'recall', 'f1')]
  header += ['clean roc_auc', 'clean CR', 'external acc', 'cross-seed recall']
  rows = []
  for run in runs:
    metrics = run['metrics']
    for head in metrics.get('clean', {}).get('heads', {}):
      row = [run['name'], head]
      for m in sets:
        h = metrics.get(m, {}).get('heads', {}).get(head, {})
        row += [h.get('precision'), h.get('recall'), h.get('f1')]
      clean = metrics['clean']['heads'][head]
      row += [clean.get('roc_auc'), clean.get('self_contradiction', {}).get('rate'),
              clean.get('external_accuracy'),
              metrics.get('cross_seed', {}).get(head, {}).get('recall')]
      rows.append(row)
  return header, rows


def multiclass_table(runs):
  sets = _test_sets(runs)
  header = ['run'] + [f'{m} acc' for m in sets] + ['clean failed', 'clean multiple']
  rows = []
  for run in runs:
    metrics = run['metrics']
    if 'multiclass' not in metrics.get('clean', {}):
      continue
    clean = metrics['clean']['multiclass']
    rows.append([run['name']] + [metrics.get(m, {}).get('multiclass', {}).get('accuracy')
                                 for m in sets]
                + [clean.get('failed_attributions'), clean.get('multiple_attributions')])
  return header, rows


def write_table(out: pathlib.Path, name: str, title: str, header, rows) -> None:
  if not rows:
    return
  with open(out / f'{name}.csv', 'w', newline='') as f:
    csv.writer(f).writerows([header] + [[_fmt(v) for v in row] for row in rows])
  lines = [f'### {title}', '', '| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(_fmt(v) for v in row) + ' |' for row in rows]
  (out / f'{name}.md').write_text('\n'.join(lines) + '\n')


def epoch_losses(workdir: pathlib.Path) -> dict:
  """-> {'epochs': [...], 'val': {output: [...]}, 'train': {output: [...]}} from metrics.jsonl."""
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()
             if line.strip()]
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


def plot_curves(runs, out: pathlib.Path) -> None:
  fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.4), squeeze=False)
  for ax, run in zip(axes[0], runs):
    losses = epoch_losses(run['workdir'])
    names = list(run['config'].get('heads') or []) or ['detector']
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
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out / 'curves.png', dpi=110)
  plt.close(fig)


def plot_confusion(run, out: pathlib.Path) -> None:
  multiclass = run['metrics'].get('clean', {}).get('multiclass')
  if not multiclass:
    return
  matrix = np.asarray(multiclass['confusion_matrix'])
  names = ['real'] + list(run['config']['heads'])
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
  fig.savefig(out / f'confusion_{run["name"]}.png', dpi=110)
  plt.close(fig)


def cam_grids(run, out: pathlib.Path, data_dir: str | None) -> None:
  """For each source: 16 test images, each with the map of the output that concerns it."""
  config = run['config']
  if config['model'].get('arch', 'proposed') != 'proposed':
    return
  model = attribute.load_model(run['workdir'])
  data = config['data']
  builder = input_pipeline.load_builder(data['name'], data['config'], data_dir or data['data_dir'])
  source = input_pipeline.data_source(builder, 'test')
  by_source: dict[str, list] = {}
  for index in range(len(source)):
    record = source[index]
    name = record['source'].decode() if isinstance(record['source'], bytes) else record['source']
    if len(by_source.setdefault(name, [])) < GRID_IMAGES:
      by_source[name].append(record['image'])
  heads = list(model.spec.head_names)
  for name, images in by_source.items():
    prepared = [attribute.prepare_input(model, image) for image in images]
    x = np.stack([p[0] for p in prepared])
    p_fake, p_heads, maps = attribute.score_batch(model.variables, x, gap=model.spec.gap,
                                                  num_heads=len(heads), with_saliency=True)
    p_fake, p_heads, maps = np.asarray(p_fake), np.asarray(p_heads), np.asarray(maps)
    output = heads.index(name) + 1 if name in heads else 0
    cells = []
    for row, (_, shown, _) in enumerate(prepared):
      background = shown if model.spec.gap else saliency.spectrum_image(shown)
      score = p_fake[row] if output == 0 else p_heads[output - 1, row]
      label = f'{"fake" if output == 0 else heads[output - 1]}:{100 * score:.0f}%'
      cells.append(saliency.overlay(background, maps[output, row], label, 'minmax'))
    while len(cells) % 4:
      cells.append(np.zeros_like(cells[0]))
    grid = np.concatenate([np.concatenate(cells[i:i + 4], axis=1)
                           for i in range(0, len(cells), 4)], axis=0)
    from PIL import Image
    Image.fromarray(grid).save(out / f'cams_{run["name"]}_{name}.png')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m gta_jax.report', description=__doc__.split('\n')[0])
  parser.add_argument('runs', nargs='+', help='run workdirs')
  parser.add_argument('--out', required=True)
  parser.add_argument('--data-dir', help="override the runs' TFDS data_dir (for the CAM grids)")
  parser.add_argument('--no-cams', action='store_true', help='skip the CAM grids')
  args = parser.parse_args(argv)
  try:
    runs = [load_run(pathlib.Path(r)) for r in args.runs]
  except FileNotFoundError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  write_table(out, 'detection', 'Detection (positive = fake)', *detection_table(runs))
  write_table(out, 'heads', 'Attribution heads (positive = the head\'s source)', *heads_table(runs))
  write_table(out, 'multiclass', 'Multiclass (failed attribution = real)', *multiclass_table(runs))
  plot_curves(runs, out)
  for run in runs:
    plot_confusion(run, out)
    if not args.no_cams:
      cam_grids(run, out, args.data_dir)
  print(f'wrote {", ".join(sorted(p.name for p in out.iterdir()))} to {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
