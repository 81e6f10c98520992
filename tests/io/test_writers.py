"""The run's records: metrics.jsonl read tolerantly, files written atomically."""
import json

from gta_jax.io import writers


def test_a_torn_last_metrics_line_is_dropped_with_a_warning_and_the_run_writes_on(tmp_path, capsys):
  """Was: json.loads of the torn line raised, and every resume of the run failed."""
  lines = [json.dumps({'step': s, 'train/loss_0': 0.5}) for s in (5, 10)]
  (tmp_path / 'metrics.jsonl').write_text('\n'.join(lines) + '\n{"step": 15, "train/lo')
  writer = writers.MetricWriter(tmp_path, resume_step=10)
  writer.scalars(15, {'train/loss_0': 0.25})
  writer.close()
  assert 'metrics.jsonl line 3 is not a whole record' in capsys.readouterr().out
  records = writers.read_json_lines(tmp_path / 'metrics.jsonl')
  assert [r['step'] for r in records] == [5, 10, 15]
  assert records[-1]['train/loss_0'] == 0.25


def test_an_atomic_write_leaves_the_old_file_whole_when_it_fails(tmp_path):
  target = tmp_path / 'results.json'
  writers.write_json_atomic(target, {'a': 1})
  try:
    writers.write_json_atomic(target, {'b': object()})  # not JSON: fails while writing
  except TypeError:
    pass
  assert json.loads(target.read_text()) == {'a': 1}
  assert [p.name for p in tmp_path.iterdir()] == ['results.json']  # no staging file left
