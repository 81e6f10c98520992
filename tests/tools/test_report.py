"""report on runs' stored results (no training): unique run names, its output folder's guard."""
import json

from PIL import Image
import pytest

from gta_jax.tools import report


def _run(workdir, f1):
  """A finished heads run's records, as report reads them: config, metrics.json (a head's figures
  and the multiclass confusion matrix), metrics.jsonl (two epochs of losses)."""
  (workdir / 'results').mkdir(parents=True)
  (workdir / 'config.json').write_text(json.dumps({'sources': ['tconv'],
                                                   'model': {'family': 'heads'}}))
  (workdir / 'results' / 'metrics.json').write_text(json.dumps({'clean': {
      'heads': {'tconv': {'precision': f1, 'recall': f1, 'f1': f1}},
      'multiclass': {'accuracy': f1, 'classes': [0, 1], 'confusion_matrix': [[3, 1], [1, 3]]}}}))
  lines = [{'step': 1, 'train/loss_0': 0.7}, {'epoch': 1, 'val/loss_0': 0.6},
           {'step': 2, 'train/loss_0': 0.5}, {'epoch': 2, 'val/loss_0': 0.4}]
  (workdir / 'metrics.jsonl').write_text(''.join(json.dumps(line) + '\n' for line in lines))
  return workdir


@pytest.fixture()
def chains(tmp_path):
  """Two quickstart-like chains whose phases share their names."""
  return [_run(tmp_path / 'runs' / chain / 'phase3_synthetic', f1)
          for chain, f1 in (('a', 0.25), ('b', 0.75))]


def test_runs_of_the_same_name_get_distinct_rows_and_files(chains, tmp_path):
  out = tmp_path / 'report'
  assert report.main([str(tmp_path / 'runs' / 'a'), str(tmp_path / 'runs' / 'b'), '--out',
                      str(out), '--no-cams']) == 0
  rows = (out / 'heads.csv').read_text().splitlines()[1:]
  assert [row.split(',')[:2] for row in rows] == [['a/phase3_synthetic', 'tconv'],
                                                  ['b/phase3_synthetic', 'tconv']]
  assert [row.split(',')[4] for row in rows] == ['0.2500', '0.7500']
  for chain in ('a', 'b'):
    assert Image.open(out / f'confusion_{chain}-phase3_synthetic.png').size[0] > 100
  manifest = json.loads((out / 'report.json').read_text())
  assert manifest['written_by'] == 'gta_jax.report'
  assert manifest['runs'] == {'a/phase3_synthetic': str(chains[0]),
                              'b/phase3_synthetic': str(chains[1])}
  assert set(manifest['files']) == {p.name for p in out.iterdir()} - {'report.json'}
  assert [p.name for p in out.iterdir() if p.name.startswith('.')] == []


def test_run_names_are_the_shortest_distinguishing_path_suffixes(tmp_path):
  paths = [tmp_path / p for p in ('x/a/phase1', 'y/a/phase1', 'x/b/phase1', 'x/a/phase2')]
  assert report.run_names(paths) == ['x/a/phase1', 'y/a/phase1', 'b/phase1', 'phase2']
  assert report.run_names([tmp_path / 'runs' / 'phase1']) == ['phase1']


def test_out_is_refused_inside_a_run_or_among_others_files(chains, tmp_path, capsys):
  run = chains[0]
  before = (run / 'results' / 'metrics.json').read_text()
  assert report.main([str(run), '--out', str(run / 'results'), '--no-cams']) == 2
  assert 'which this command reads' in capsys.readouterr().err
  assert report.main([str(run), '--out', str(run / 'results'), '--no-cams', '--overwrite']) == 2
  assert (run / 'results' / 'metrics.json').read_text() == before
  assert sorted(p.name for p in (run / 'results').iterdir()) == ['metrics.json']
  papers = tmp_path / 'papers'
  papers.mkdir()
  (papers / 'heads.md').write_text('my notes')
  assert report.main([str(run), '--out', str(papers), '--no-cams']) == 2
  assert 'heads.md' in capsys.readouterr().err and (papers / 'heads.md').read_text() == 'my notes'
  (papers / 'report.json').write_text('{"runs": {}}')  # a manifest not report's own: ignored
  assert report.main([str(run), '--out', str(papers), '--no-cams']) == 2
  assert report.main([str(run), '--out', str(papers), '--no-cams', '--overwrite']) == 0
  assert (papers / 'heads.md').read_text().startswith('### Attribution heads')
  # Its own folder: replaced whole by a rerun; files of the earlier report not written again go.
  out = tmp_path / 'report'
  assert report.main([str(chains[0]), str(chains[1]), '--out', str(out), '--no-cams']) == 0
  assert (out / 'confusion_a-phase3_synthetic.png').is_file()
  assert report.main([str(chains[1]), '--out', str(out), '--no-cams']) == 0
  assert sorted(p.name for p in out.iterdir()) == [
      'confusion_phase3_synthetic.png', 'curves.png', 'heads.csv', 'heads.md', 'multiclass.csv',
      'multiclass.md', 'report.json']


def test_a_torn_metrics_line_is_dropped_and_an_empty_results_file_named(chains, tmp_path, capsys):
  """Was: a json.loads traceback for either (a run killed while it wrote them)."""
  run = chains[0]
  with open(run / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 3, "train/lo')
  assert report.main([str(run), '--out', str(tmp_path / 'r1'), '--no-cams']) == 0
  assert 'line 5 is not a whole record' in capsys.readouterr().out
  (run / 'results' / 'metrics.json').write_text('')
  assert report.main([str(run), '--out', str(tmp_path / 'r2'), '--no-cams']) == 2
  assert 'metrics.json: cannot be read; evaluate the run again' in capsys.readouterr().err


def test_calibration_and_operating_points_sit_side_by_side_with_their_diagrams(chains, tmp_path):
  """A detection run's figures as evaluation writes them (metrics.summarize with a calibration
  fitted on validation scores) -> calibration.csv rows per output and reliability.png."""
  import numpy as np

  from gta_jax.scoring import calibration
  from gta_jax.scoring import metrics
  from gta_jax.scoring import verdicts

  rng = np.random.default_rng(0)

  def scores(n):
    label = rng.integers(0, 2, n)
    return {'label': label, 'source_id': label,
            'p_fake': (1 / (1 + np.exp(-3 * (label - 0.5) - rng.normal(0, 2, n)))).astype(np.float32),
            'p_heads': np.zeros((0, n), np.float32)}

  validation = scores(500)
  fitted = calibration.Calibration(
      calibration.fit_output(validation['label'] != 0, validation['p_fake']), ())
  outputs = metrics.Outputs(detection=True, calibration=fitted)
  run = tmp_path / 'runs' / 'c' / 'phase1_synthetic'
  (run / 'results').mkdir(parents=True)
  (run / 'config.json').write_text(json.dumps({'model': {'family': 'primary'}}))
  results = {'clean': metrics.summarize(scores(400), outputs, verdicts.Thresholds())}
  (run / 'results' / 'metrics.json').write_text(json.dumps(results))
  (run / 'metrics.jsonl').write_text(json.dumps({'epoch': 1, 'val/loss_0': 0.5}) + '\n')
  out = tmp_path / 'report'
  assert report.main([str(run), str(chains[0]), '--out', str(out), '--no-cams']) == 0
  header, *rows = [line.split(',') for line in (out / 'calibration.csv').read_text().splitlines()]
  assert header[:6] == ['run', 'output', 'clean ece', 'clean nll', 'clean brier', 'T']
  detector = next(r for r in rows if r[1] == 'detector')
  clean = results['clean']['detection']
  assert detector[header.index('T')] == f'{fitted.detection["temperature"]:.4f}'
  assert detector[header.index('clean tpr@fpr1%')] == f'{clean["tpr_at_fpr_1pct"]["tpr"]:.4f}'
  assert detector[header.index('clean best f1 (oracle)')] == f'{clean["best_f1"]:.4f}'
  # The heads run was evaluated before calibration was reported: no row of dashes for it.
  assert [r[1] for r in rows] == ['detector']
  assert Image.open(out / 'reliability.png').size[0] > 100
