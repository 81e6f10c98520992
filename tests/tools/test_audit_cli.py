"""gta-audit on folder trees and prepared datasets: the report, exit statuses, the JSON output."""
import io
import json

import numpy as np
from PIL import Image
import pytest

from gta_jax.tools import audit as audit_tool
import keras_reference as ref

RNG = np.random.default_rng(2)


def _png(size=32) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(RNG.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, 'PNG')
  return buffer.getvalue()


def _jpeg(size=32) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(RNG.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
      buffer, 'JPEG', quality=90)
  return buffer.getvalue()


@pytest.fixture
def planted(tmp_path):
  """Fakes saved as PNG, reals as JPEG: the shortcut gta-audit must flag."""
  root = tmp_path / 'tree'
  for folder, make, count in (('real/photos', _jpeg, 16), ('fake/gana', _png, 8),
                              ('fake/ganb', _png, 8)):
    (root / folder).mkdir(parents=True)
    for n in range(count):
      (root / folder / f'{n}{".jpg" if make is _jpeg else ".png"}').write_bytes(make())
  return root


def test_a_planted_shortcut_is_flagged_exit_0_and_json_written(planted, tmp_path, capsys):
  out = tmp_path / 'audit.json'
  assert audit_tool.main([str(planted), '--json', str(out)]) == 0
  printed = capsys.readouterr().out
  assert 'FLAG format: PNG for every fake image; JPEG for every real image' in printed
  assert 'FLAGGED' in printed
  report = json.loads(out.read_text())
  assert report['written_by'] == 'gta_jax.audit' and report['flagged'] is True
  assert report['summary']['photos']['format'] == {'JPEG': 16}
  # its own output is replaced; a stranger's JSON only with --overwrite
  assert audit_tool.main([str(planted), '--json', str(out)]) == 0
  other = tmp_path / 'other.json'
  other.write_text('{"mine": 1}')
  assert audit_tool.main([str(planted), '--json', str(other)]) == 2
  assert 'not written by audit' in capsys.readouterr().err
  assert json.loads(other.read_text()) == {'mine': 1}
  assert audit_tool.main([str(planted), '--json', str(other), '--overwrite']) == 0


def test_usage_errors_exit_2_naming_what_is_wrong(planted, tmp_path, capsys):
  missing = tmp_path / 'nowhere'
  assert audit_tool.main([str(missing)]) == 2
  assert f'{missing}: no such folder' in capsys.readouterr().err
  assert audit_tool.main([]) == 2
  assert 'a FOLDER or --dataset' in capsys.readouterr().err
  assert audit_tool.main([str(planted), '--dataset', 'ganfp']) == 2
  capsys.readouterr()
  flat = tmp_path / 'flat'
  flat.mkdir()
  (flat / 'a.png').write_bytes(_png())
  assert audit_tool.main([str(flat)]) == 2
  assert f'{flat / "real"}: no source folders' in capsys.readouterr().err
  assert audit_tool.main([str(planted), '--per-source', '3']) == 2
  assert audit_tool.main([str(planted), '--per-source', '200']) == 2  # the default, named
  assert '--model' in capsys.readouterr().err
  assert audit_tool.main(['--dataset', 'ganfp/2-1-1', '--data-dir', str(tmp_path / 'tfds')]) == 2
  assert 'not prepared' in capsys.readouterr().err
  assert audit_tool.main([str(planted), '--permutations', '10']) == 2


def test_an_unreadable_file_is_named_and_exits_1(planted, capsys):
  (planted / 'fake' / 'gana' / 'broken.png').write_bytes(b'not a png')
  assert audit_tool.main([str(planted)]) == 1
  printed = capsys.readouterr().out
  assert 'broken.png' in printed and '1 file(s) could not be read' in printed
  assert 'FLAG format' in printed  # the rest is audited


def test_flip_test_through_the_cli(planted, tmp_path, capsys):
  model = tmp_path / 'attribution_ganfp_progan.h5'
  ref.write_h5(model, ref.random_layers(RNG, ref.layer_shapes(3, True, 32, ('a',))), (32, 32, 3))
  out = tmp_path / 'audit.json'
  assert audit_tool.main([str(planted), '--model', str(model), '--per-source', '2',
                          '--json', str(out)]) == 0
  assert 'flip test (first 2 images per source' in capsys.readouterr().out
  flip = json.loads(out.read_text())['flip_test']
  assert {s: v['images'] for s, v in flip['sources'].items()} == {'photos': 2, 'gana': 2,
                                                                  'ganb': 2}
  assert flip['variants'] == ['png', 'jpeg95', 'jpeg75', 'resize0.9', 'crop8']


@pytest.mark.slow
def test_the_built_in_data_stays_quiet(smoke_data_dir, tmp_path, capsys):
  out = tmp_path / 'audit.json'
  assert audit_tool.main(['--dataset', 'synthetic_fingerprints/smoke', '--data-dir',
                          smoke_data_dir, '--json', str(out)]) == 0
  report = json.loads(out.read_text())
  assert report['flagged'] is False
  assert all(c['flags'] == [] for c in report['checks'])
  assert {s['format'] and next(iter(s['format'])) for s in report['summary'].values()} == {'PNG'}
  for split in ('test', 'test_external'):
    assert audit_tool.main(['--dataset', 'synthetic_fingerprints/smoke', '--data-dir',
                            smoke_data_dir, '--split', split]) == 0
  assert 'nothing flagged' in capsys.readouterr().out


@pytest.mark.slow
def test_flip_test_on_a_trained_smoke_model(smoke_data_dir, smoke_primary, tmp_path):
  out = tmp_path / 'audit.json'
  assert audit_tool.main(['--dataset', 'synthetic_fingerprints/smoke', '--data-dir',
                          smoke_data_dir, '--split', 'test', '--model', str(smoke_primary),
                          '--per-source', '8', '--json', str(out)]) == 0
  flip = json.loads(out.read_text())['flip_test']
  assert set(flip['sources']) == {'real', 'tconv', 'nearest', 'bilinear', 'pixelshuffle'}
  for source in flip['sources'].values():
    assert source['images'] == 8 and source['original_errors'] == 0
    assert source['variants']['png']['verdict_changed'] == 0
