"""The side-by-side benchmark runs and reports both lowerings (tiny sizes; no timing asserted)."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_train_step_benchmark_reports_both_forms(tmp_path):
  out = tmp_path / 'heads.json'
  subprocess.run([sys.executable, 'benchmarks/train_step.py', '--model', 'heads', '--image-size',
                  '32', '--batch', '8', '--rounds', '1', '--json', str(out)],
                 cwd=ROOT, check=True, capture_output=True, timeout=600)
  record = json.loads(out.read_text())
  assert set(record['forms']) == {'lax', 'cpu'}
  for form in record['forms'].values():
    assert form['train_images_per_sec'] > 0 and form['inference_images_per_sec'] > 0
  assert set(record['cpu_vs_lax']) == {'train', 'inference'}
  assert record['gflop_per_train_step'] > 0


def test_open_set_scoring_benchmark_reports_each_path_and_the_ratios(tmp_path):
  out = tmp_path / 'open_set.json'
  subprocess.run([sys.executable, 'benchmarks/open_set_scoring.py', '--batch', '2',
                  '--image-size', '32', '--bank', '20', '--json', str(out)],
                 cwd=ROOT, check=True, capture_output=True, timeout=600)
  record = json.loads(out.read_text())
  assert set(record['seconds_per_batch']) == {'heads_only', 'with_features', 'knn_path',
                                                'knn_alone'}
  assert all(s > 0 for s in record['seconds_per_batch'].values())
  assert record['ratio_knn_path_to_heads_only'] > 0 and {'cpu_count', 'jax'} <= set(record['machine'])
