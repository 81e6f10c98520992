"""The side-by-side benchmark runs and reports both lowerings (tiny sizes; no timing asserted)."""
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # each test runs a benchmark script in a process of its own


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


def test_data_path_benchmark_reports_both_paths_and_the_three_feeds(smoke_data_dir, tmp_path):
  out = tmp_path / 'data_path.json'
  subprocess.run([sys.executable, 'benchmarks/data_path.py', '--data_dir', smoke_data_dir,
                  '--dataset_config', 'smoke', '--batch', '8', '--images', '16', '--repeats', '1',
                  '--workers', '1', '--modes', 'one', '--steps', '2', '--step_batch', '8',
                  '--json', str(out)], cwd=ROOT, check=True, capture_output=True, timeout=900)
  record = json.loads(out.read_text())
  assert set(record['data_paths_images_per_s']['one']) == {
      'host_0_workers', 'host_1_workers', 'device_select', 'device_switch'}
  assert all(v > 0 for v in record['data_paths_images_per_s']['one'].values())
  assert set(record['step_ms']) == {'model_alone', 'device_path', 'host_path_0_workers',
                                    'host_path_1_workers'}
  assert all(v > 0 for v in record['step_ms'].values()) and record['image_size'] == 32


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


def test_fingerprint_survival_blur_takes_the_top_octave_first_noise_leaves_the_trace(
    smoke_data_dir, tmp_path):
  out = tmp_path / 'survival.json'
  subprocess.run([sys.executable, 'benchmarks/fingerprint_survival.py', '--config', 'smoke',
                  '--data-dir', smoke_data_dir, '--limit', '12', '--json', str(out)],
                 cwd=ROOT, check=True, capture_output=True, timeout=600)
  record = json.loads(out.read_text())
  figures = record['figures']
  assert record['crops'] == 12 and len(record['build_sha256']) == 64
  sources = set(figures['clean'])
  assert sources == {'tconv', 'nearest', 'bilinear', 'pixelshuffle'}
  for source in sources:
    assert figures['clean'][source]['kept'] == 1.0 and figures['clean'][source]['change_rms'] == 0
    blurred = [figures[f'blur k{k}'][source]['kept'] for k in (3, 5, 7, 9)]
    assert 1.0 > blurred[0] > blurred[1] > blurred[2] > blurred[3]  # a wider kernel takes more
    # A blur is a low-pass filter: it leaves more of the trace the lower the octave.
    by_octave = figures['blur k5'][source]['kept_by_octave']
    assert list(by_octave) == ['0.25-0.5', '0.125-0.25', '0.0625-0.125']
    assert by_octave['0.25-0.5'] == figures['blur k5'][source]['kept']
    assert by_octave['0.25-0.5'] < by_octave['0.125-0.25'] < by_octave['0.0625-0.125']
    assert all(v == 1.0 for v in figures['clean'][source]['kept_by_octave'].values())
    # The same noise on a crop and its fake leaves the trace (up to rounding), masks it more
    # the stronger it is.
    assert 0.9 < figures['noise std 5'][source]['kept'] < 1.1
    assert (figures['noise std 5'][source]['change_rms'] < figures['noise std 12.5'][source][
        'change_rms'] < figures['noise std 20'][source]['change_rms'])


def test_enrolled_heads_benchmark_reports_the_curve_against_the_flop_estimate(tmp_path):
  out = tmp_path / 'enrolled.json'
  subprocess.run([sys.executable, 'benchmarks/enrolled_heads.py', '--heads', '1,3', '--batch', '2',
                  '--image-size', '32', '--rounds', '1', '--json', str(out)],
                 cwd=ROOT, check=True, capture_output=True, timeout=600)
  record = json.loads(out.read_text())
  assert set(record['by_heads']) == {'1', '3'}
  assert record['by_heads']['1']['vs_flop_estimate'] == 1.0  # the estimate is anchored there
  assert record['mflop_per_image']['head'] > 0 and record['mflop_per_image']['primary'] > 0
  for row in record['by_heads'].values():
    assert row['per_head_images_per_s'] > 0 and row['stacked_images_per_s'] > 0
    assert row['peak_rss_mib'] > 0


def test_xla_switches_benchmark_compares_each_configuration_with_the_default(tmp_path):
  out = tmp_path / 'switches.json'
  subprocess.run([sys.executable, 'benchmarks/xla_switches.py', '--batches', '4', '--models',
                  'primary', '--forms', 'cpu', '--configs', 'default,ynn_off', '--image-size',
                  '32', '--rounds', '1', '--json', str(out)],
                 cwd=ROOT, check=True, capture_output=True, timeout=600)
  record = json.loads(out.read_text())
  assert [(r['step'], set(r['configs'])) for r in record['rows']] == [
      ('train', {'default', 'ynn_off'}), ('inference', {'default', 'ynn_off'})]
  for row in record['rows']:
    assert row['configs']['default']['vs_default_median'] == 1.0
    assert row['configs']['ynn_off']['images_per_sec'] > 0
    assert row['configs']['ynn_off']['p_fake_max_diff'] < 1e-4  # summation order only


def test_profile_step_attributes_the_step_wall_time_to_layers(tmp_path):
  out = tmp_path / 'profile.json'
  subprocess.run([sys.executable, 'benchmarks/profile_step.py', '--batch', '4', '--image-size',
                  '32', '--steps', '2', '--json', str(out)],
                 cwd=ROOT, check=True, capture_output=True, timeout=600)
  record = json.loads(out.read_text())['jax']
  assert record['attributed_wall_ms'] == pytest.approx(record['step_wall_ms'], rel=1e-6)
  assert {'1', '6'} <= set(record['by_layer'])
  assert sum(layer['kernel gradient'] for layer in record['by_layer'].values()) > 0
  assert record['by_layer']['1']['input gradient'] == 0  # the image needs no gradient


def test_bf16_benchmark_reports_speed_hlo_dtypes_and_differences(tmp_path):
  out = tmp_path / 'bf16.json'
  subprocess.run([sys.executable, 'benchmarks/bf16_step.py', '--batches', '4', '--forms', 'lax',
                  '--image-size', '32', '--rounds', '1', '--json', str(out)],
                 cwd=ROOT, check=True, capture_output=True, timeout=600)
  record = json.loads(out.read_text())
  (row,) = record['steps']
  assert row['train']['bf16_convolutions'] > 0 and row['train']['bf16_images_per_sec'] > 0
  assert 0 < row['differences']['kernel_gradient_rel_l2_max'] < 1
  assert all(m['bf16_dot_operands'] for m in record['matmuls_at_conv_shapes'])
