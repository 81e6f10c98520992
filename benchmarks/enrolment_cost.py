"""The cost of adding the (K+1)-th generator: enrol one head on the frozen primary, against
retraining a multiclass model, or all K+1 heads, on every source (the paper's scalability claim).

python benchmarks/enrolment_cost.py --primary runs/quickstart/phase2_synthetic \
    --heads-run runs/quickstart/phase3_synthetic --json out.json [--counts 2,4,8]

Needs the built-in data's `variants` build (its variant generators serve as extra generators):
the script exports it in the folder layout and prepares one folder dataset per K (real + K+1
generators, 100 images each, split 70/10/20). For each K, timed as a user waits for it (the whole
`launch.py` command: training, evaluation, the open-set fit), the same recipe and epoch budget
(configs/phase3_synthetic.py's recipe, 10 epochs each, no early stopping), with each model's
clean test figures beside its time:
  enrol       one head for the new generator on the frozen primary (one-vs-rest on all sources);
  heads       all K+1 heads trained again on the primary (the proposed model, centralised);
  multiclass  the GANFP post-pool baseline (Yu et al.), softmax over real + K+1, from scratch.
Then the existing heads (--heads-run's) are scored on the new dataset's test images in a model
without and with the new head: `existing_heads_max_abs_change` is their largest score change
(0.0: enrolment moves no other head), and each one's ROC-AUC on its source before and after.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
from sklearn import metrics as sk_metrics

import common  # benchmarks/common.py
from gta_jax.scoring import inference

ROOT = pathlib.Path(__file__).resolve().parents[1]
# New generators, in the order they are enrolled: the built-in sources first, then the unseen
# architectures and variants of the known ones.
# The one enrolled for K (GENERATORS[K]: cubic, lanczos3, bilinear.finetuned) is none of the
# existing heads' sources.
GENERATORS = ('tconv', 'nearest', 'cubic', 'bilinear', 'lanczos3', 'pixelshuffle.wider',
              'tconv.wider', 'nearest.retrained_l2', 'bilinear.finetuned')


def run(command, env, log):
  start = time.perf_counter()
  with open(log, 'w') as out:
    subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
  return time.perf_counter() - start


def launch(config, data, sources, name, workdir, env, extra=()):
  tuple_text = '(' + ''.join(f"'{s}'," for s in sources) + ')'
  command = [sys.executable, 'launch.py', f'--config={config}', '--config.data.name=folder',
             f'--config.data.config={data}', f'--config.sources={tuple_text}',
             f'--config.name={name}', f'--workdir={workdir / name}', *extra]
  return run(command, env, workdir / f'{name}.log')


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--primary', required=True, help='the phase-II run the heads build on')
  parser.add_argument('--heads-run', required=True, help='a phase-III run on that primary (the '
                      'existing heads)')
  parser.add_argument('--counts', default='2,4,8')
  parser.add_argument('--data-dir', default=os.environ.get('TFDS_DATA_DIR', 'data/tfds'))
  parser.add_argument('--workdir', help='default: a temporary folder')
  parser.add_argument('--json')
  args = parser.parse_args()
  counts = [int(k) for k in args.counts.split(',')]
  workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix='enrolment_'))
  workdir.mkdir(parents=True, exist_ok=True)
  env = {**os.environ, 'TFDS_DATA_DIR': str(pathlib.Path(args.data_dir).absolute())}
  exported = workdir / 'exported'
  if not exported.is_dir():
    run([sys.executable, '-m', 'gta_jax.prepare', '--dataset', 'synthetic_fingerprints',
         '--config', 'variants', '--export-folder', str(exported), '--sources',
         ','.join(GENERATORS[:max(counts) + 1])], env, workdir / 'export.log')
  primary = str(pathlib.Path(args.primary).absolute())
  rows = {}
  for k in counts:
    sources, new = GENERATORS[:k + 1], GENERATORS[k]
    tree = workdir / f'folders_{k}'
    for folder in ['real/real'] + [f'fake/{s}' for s in sources]:
      (tree / folder).parent.mkdir(parents=True, exist_ok=True)
      if not (tree / folder).exists():
        (tree / folder).symlink_to(exported / folder)
    tag = f'enrol{k}-70-10-20'  # the variant generators' 100 images each, for every source
    run([sys.executable, '-m', 'gta_jax.prepare', '--dataset', 'folder', '--manual-dir',
         str(tree), '--config', tag, '--image-size', '128'], env, workdir / f'prepare_{k}.log')
    # One budget for all: 10 epochs, no early stopping (a model that stops learning early would
    # otherwise look cheap).
    budget = ['--config.optim.max_epochs=10', '--config.optim.patience=10']
    primary_flag = [f'--config.init.primary={primary}', *budget]
    seconds = {
        'enrol': launch('configs/phase3_synthetic.py', tag, (new,), f'enrol_{k}', workdir, env,
                        primary_flag),
        'heads': launch('configs/phase3_synthetic.py', tag, sources, f'heads_{k}', workdir, env,
                        primary_flag),
        'multiclass': launch('configs/baseline_postpool.py:multiclass', tag, sources,
                             f'multiclass_{k}', workdir, env,
                             ['--config.optim.batch_size=32', '--config.eval.batch_size=32',
                              *budget])}
    clean = {name: json.loads((workdir / f'{name}_{k}' / 'results' / 'metrics.json').read_text())
             ['clean'] for name in ('enrol', 'heads', 'multiclass')}
    # The existing heads, without and with the new one, on the new dataset's test images.
    test = sorted(p for s in sources for p in (tree / 'fake' / s).iterdir())
    test = [p for p in test if 80 <= int(p.stem) < 100]  # each source's first 100: 70/10/20
    test += sorted((tree / 'real' / 'real').iterdir())[80:100]
    paths = [str(p) for p in test]
    before_model = inference.load_model([args.primary, args.heads_run])
    after_model = inference.load_model([args.primary, args.heads_run, str(workdir / f'enrol_{k}')])
    before = inference.attribute(before_model, paths)
    after = inference.attribute(after_model, paths)
    existing = before_model.spec.head_names
    change = max(abs(a['p_heads'][h] - b['p_heads'][h]) for a, b in zip(after, before)
                 for h in existing)
    source_of = [pathlib.Path(p).parent.name for p in paths]
    auc = {}
    for h in existing:
      if h in source_of:
        truth = np.array([s == h for s in source_of])
        auc[h] = {'before': sk_metrics.roc_auc_score(truth, [r['p_heads'][h] for r in before]),
                  'after': sk_metrics.roc_auc_score(truth, [r['p_heads'][h] for r in after])}
    rows[k] = {'new_generator': new, 'sources': list(sources), 'seconds': seconds,
               'multiclass_over_enrol': seconds['multiclass'] / seconds['enrol'],
               'heads_over_enrol': seconds['heads'] / seconds['enrol'],
               'test_clean': {'enrol_new_head_f1': clean['enrol']['heads'][new]['f1'],
                              'heads_new_head_f1': clean['heads']['heads'][new]['f1'],
                              'heads_multiclass_accuracy': clean['heads']['multiclass']['accuracy'],
                              'multiclass_accuracy': clean['multiclass']['multiclass']['accuracy']},
               'existing_heads_max_abs_change': change, 'existing_heads_roc_auc': auc,
               'verdicts_changed_not_involving_new': sum(
                   a['verdict'] != b['verdict'] and new not in a['verdict']
                   for a, b in zip(after, before))}
    print(f'K={k}: enrol {seconds["enrol"]:.0f} s, all heads {seconds["heads"]:.0f} s, multiclass '
          f'{seconds["multiclass"]:.0f} s; existing heads moved by {change}', flush=True)
  common.write_json(args.json, {'counts': counts, 'by_k': rows, 'workdir': str(workdir),
                                'machine': common.machine()})


if __name__ == '__main__':
  main()
