"""One output guard for every tool that writes: what each refuses before any work, what it may
replace (its own earlier output, or anything with --overwrite), and the atomic writes."""
import json
import os

from PIL import Image
import pytest

from gta_jax import errors
from gta_jax.io import composition
from gta_jax.io import outputs
from gta_jax.scoring import inference
from gta_jax.tools import attribute
from gta_jax.tools import crosstest
from gta_jax.tools import heldout
from gta_jax.tools import openset


def _fake_run(directory):
  """A finished run's files, as far as the guard looks: its bundle's model.json, config and
  results (no weights: nothing here may get as far as loading them)."""
  (directory / 'model').mkdir(parents=True)
  (directory / 'model' / 'model.json').write_text('{"format": "bundle"}\n')
  (directory / 'config.json').write_text('{"name": "run"}\n')
  (directory / 'results').mkdir()
  (directory / 'results' / 'metrics.json').write_text('{"clean": {}}\n')
  return directory


@pytest.fixture()
def work(tmp_path, monkeypatch):
  """A run, an image folder, and every tool's work replaced by a recorder: a tool that gets past
  its output checks records a call (and exit 2 with 'worked'), so a refusal is seen before work."""
  run = _fake_run(tmp_path / 'runs' / 'phase3')
  images = tmp_path / 'images'
  images.mkdir()
  Image.new('RGB', (32, 32)).save(images / 'a.png')
  calls = []

  def worked(*args, **kwargs):
    calls.append(args)
    raise errors.UsageError('worked')

  monkeypatch.setattr(attribute, 'load_model', worked)
  monkeypatch.setattr(inference, 'load_model', worked)
  monkeypatch.setattr(openset, 'heads_runs_under', worked)
  monkeypatch.setattr(crosstest.evaluation, 'crosstest_run', worked)
  return run, images, calls


TOOLS = {
    'attribute': lambda run, images: (attribute.main, ['--model', str(run), str(images)]),
    'heldout': lambda run, images: (heldout.main, ['--model', str(run), '--real', str(images)]),
    'openset': lambda run, images: (openset.main, ['--workdir', str(run)]),
    'crosstest': lambda run, images: (crosstest.main, ['--workdir', str(run)]),
}


@pytest.mark.parametrize('tool', sorted(TOOLS))
def test_every_json_output_is_refused_before_any_work_where_it_would_destroy(tool, work, tmp_path,
                                                                              capsys):
  run, images, calls = work
  main, argv = TOOLS[tool](run, images)
  png = tmp_path / 'picture.png'
  Image.new('RGB', (8, 8)).save(png)
  settings = tmp_path / 'settings.json'
  settings.write_text('{"theme": "dark"}\n')
  cases = [  # (target, with --overwrite, what the message says)
      (run / 'model' / 'model.json', False, 'which this command reads'),
      (run / 'model' / 'model.json', True, 'which this command reads'),
      (run / 'results' / 'metrics.json', True, 'which this command reads'),
      (run / 'results' / 'new.json', False, 'which this command reads'),
      (settings, False, 'was not written by'),
      (png, True, 'not a JSON file'),
      (tmp_path, False, 'is a folder'),
  ]
  for target, overwrite, message in cases:
    before = {p: p.read_bytes() for p in (run / 'model' / 'model.json', settings, png,
                                          run / 'results' / 'metrics.json')}
    code = main(argv + ['--json', str(target)] + ['--overwrite'] * overwrite)
    err = capsys.readouterr().err
    assert code == 2 and message in err and 'worked' not in err, (target, overwrite, err)
    assert {p: p.read_bytes() for p in before} == before
    assert not (run / 'results' / 'new.json').exists()
  assert calls == []


@pytest.mark.parametrize('tool', ['openset', 'crosstest'])
def test_a_json_output_replaces_its_own_earlier_one_and_others_only_with_overwrite(
    tool, tmp_path, monkeypatch, capsys):
  run = _fake_run(tmp_path / 'run')
  monkeypatch.setattr(crosstest.evaluation, 'crosstest_run', lambda *a: {'real': {
      'count': 1, 'false_claims': 0.0, 'by_head': {}}})
  monkeypatch.setattr(openset, 'heads_runs_under', lambda workdir: [workdir])
  monkeypatch.setattr(openset.HeadsRun, 'open', lambda *a: type('R', (), {'spec': type(
      'S', (), {'open_set': {'knn': {}}, 'head_names': ('a',)})()})())
  monkeypatch.setattr(openset, 'protocols', lambda *a: {'unseen_seed': {'auroc': 0.5}})
  main = {'openset': openset.main, 'crosstest': crosstest.main}[tool]
  out = tmp_path / 'out.json'
  out.write_text('{"mine": 1}\n')
  assert main(['--workdir', str(run), '--json', str(out)]) == 2
  assert json.loads(out.read_text()) == {'mine': 1}
  assert main(['--workdir', str(run), '--json', str(out), '--overwrite']) == 0
  written = json.loads(out.read_text())
  assert written['written_by'] == f'gta_jax.{tool}' and 'mine' not in written
  assert main(['--workdir', str(run), '--json', str(out)]) == 0  # its own: replaced
  assert json.loads(out.read_text()) == written
  assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []


def test_payload_reads_marked_and_earlier_unmarked_outputs():
  records = [{'path': 'a.png'}]
  assert outputs.mark('attribute', records) == {'written_by': 'gta_jax.attribute',
                                                'records': records}
  assert outputs.payload(outputs.mark('attribute', records)) == records
  assert outputs.payload(records) == records  # written before the mark
  summary = {'summary': {}, 'failed': []}
  assert list(outputs.mark('heldout', summary)) == ['written_by', 'summary', 'failed']
  assert outputs.payload(outputs.mark('heldout', summary)) == summary
  assert outputs.payload(summary) == summary


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path):
  out = tmp_path / 'out.json'
  outputs.write_json(out, {'a': 1}, 'heldout')

  class Unserialisable:
    pass

  with pytest.raises(TypeError):
    outputs.write_json(out, {'a': Unserialisable()}, 'heldout')
  assert outputs.load(out) == {'a': 1} and sorted(os.listdir(tmp_path)) == ['out.json']
  with pytest.raises(ValueError):
    outputs.write_json(out, {'a': float('nan')})  # strict JSON
  assert outputs.load(out) == {'a': 1}


def test_within_sees_through_links_and_dots(tmp_path):
  run = _fake_run(tmp_path / 'run')
  (tmp_path / 'link').symlink_to(run)
  assert outputs.within(tmp_path / 'link' / 'model' / 'model.json', run)
  assert outputs.within(tmp_path / 'run' / '..' / 'run' / 'results', run)
  assert not outputs.within(tmp_path / 'run2', run)
  assert composition.read_area(run / 'model') == run and composition.read_area(run) == run


def test_a_folder_output_lists_its_files_before_writing_them_and_keeps_to_its_folder(tmp_path):
  folder = outputs.check_folder(tmp_path / 'out', tool='report', flag='--out',
                                manifest='report.json')
  with folder.writing('a.md') as staging:
    assert json.loads((tmp_path / 'out' / 'report.json').read_text())['files'] == {'a.md': None}
    staging.write_text('first')
  with folder.writing('a.md') as staging:  # a second file of that name in one run: a-2.md
    staging.write_text('second')
  assert (tmp_path / 'out' / 'a.md').read_text() == 'first'
  assert (tmp_path / 'out' / 'a-2.md').read_text() == 'second'
  # A hand-edited manifest naming a file outside the folder: never removed as stale.
  (tmp_path / 'precious.txt').write_text('keep')
  manifest = tmp_path / 'out' / 'report.json'
  record = json.loads(manifest.read_text())
  record['files']['../precious.txt'] = None
  manifest.write_text(json.dumps(record))
  again = outputs.check_folder(tmp_path / 'out', tool='report', flag='--out',
                               manifest='report.json')
  assert set(again.earlier) == {'a.md', 'a-2.md'}
  again.remove_stale()
  assert (tmp_path / 'precious.txt').read_text() == 'keep'
  assert sorted(os.listdir(tmp_path / 'out')) == ['report.json']
  # Someone else's report.json is a file like any other: refused, not taken for the manifest.
  manifest.write_text('{"runs": {}}')
  with pytest.raises(errors.UsageError, match='report.json'):
    outputs.check_folder(tmp_path / 'out', tool='report', flag='--out', manifest='report.json')
