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
