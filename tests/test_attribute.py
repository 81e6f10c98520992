"""The attribute command on odd inputs, with a small synthetic release-layout model."""
import io
import json

import numpy as np
import pytest
from PIL import Image

import keras_reference as ref
from gta_jax import attribute, images

RNG = np.random.default_rng(1)
SIZE = 32


@pytest.fixture(scope='module')
def pixel_model(tmp_path_factory):
  path = tmp_path_factory.mktemp('model') / 'attribution_ganfp_progan.h5'
  ref.write_h5(path, ref.random_layers(RNG, ref.layer_shapes(3, True, SIZE, ('a',))), (SIZE, SIZE, 3))
  return path


@pytest.fixture(scope='module')
def dct_model(tmp_path_factory):
  directory = tmp_path_factory.mktemp('dct')
  path = directory / 'primary_ganfp_dct.h5'
  ref.write_h5(path, ref.random_layers(RNG, ref.layer_shapes(1, False, SIZE, ())), (SIZE, SIZE, 1))
  from gta_jax import spectral
  spectral.DctStats(mean=np.zeros((SIZE, SIZE)), std=np.full((SIZE, SIZE), 3.0), count=1).save(
      directory / 'stats')
  return path, directory / 'stats'


def _rgb(size=SIZE):
  return RNG.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _odd_files(directory):
  """One file per kind of input a user might throw at the command -> {name: expect_ok}."""
  rgb = _rgb()
  Image.fromarray(rgb).save(directory / 'rgb.png')
  Image.fromarray(rgb).save(directory / 'rgb.jpg', quality=90)
  Image.fromarray(rgb[..., 0]).save(directory / 'grey.png')
  Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(directory / 'sixteen_bit.png')
  Image.fromarray(rgb).convert('P', palette=Image.Palette.ADAPTIVE).save(directory / 'palette.png')
  Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(directory / 'rgba.png')
  Image.fromarray(rgb).convert('CMYK').save(directory / 'cmyk.jpg')
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90 degrees on display
  Image.fromarray(_rgb()[:, :SIZE // 2]).save(directory / 'exif_rotated.jpg', exif=exif)
  (directory / 'zero.png').write_bytes(b'')
  (directory / 'not_an_image.png').write_text('hello')
  buffer = io.BytesIO()
  Image.fromarray(rgb).save(buffer, format='PNG')
  (directory / 'truncated.png').write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
  # A tiny file that claims to be 40000x40000: refused before it is decoded.
  Image.new('1', (40000, 40000)).save(directory / 'bomb.png', optimize=True)
  return {'rgb.png': True, 'rgb.jpg': True, 'grey.png': True, 'sixteen_bit.png': True,
          'palette.png': True, 'rgba.png': True, 'cmyk.jpg': True, 'exif_rotated.jpg': True,
          'zero.png': False, 'not_an_image.png': False, 'truncated.png': False, 'bomb.png': False}


def test_every_odd_input_is_scored_or_gets_a_clear_error(tmp_path, pixel_model, capsys):
  expected = _odd_files(tmp_path)
  out_json = tmp_path / 'out.json'
  code = attribute.main(['--model', str(pixel_model), '--json', str(out_json), str(tmp_path)])
  assert code == 1  # some failed, none aborted the batch
  records = {r['path'].split('/')[-1]: r for r in json.loads(out_json.read_text())}
  assert set(records) == set(expected)
  for name, ok in expected.items():
    record = records[name]
    assert set(record) >= {'path', 'p_fake', 'p_heads', 'verdict', 'error'}
    if ok:
      assert record['error'] is None, record
      assert 0 <= record['p_fake'] <= 1 and set(record['p_heads']) == {'progan'}
    else:
      assert record['error'] and name in record['error'] and record['verdict'] == 'error'
  assert 'empty' in records['zero.png']['error']
  assert 'decompression bomb' in records['bomb.png']['error']
  printed = capsys.readouterr().out
  assert '8 scored, 4 failed' in printed


def test_conversions_are_what_a_user_expects(tmp_path):
  _odd_files(tmp_path)
  rgb, _ = images.read_rgb(tmp_path / 'rgb.png')
  grey, _ = images.read_rgb(tmp_path / 'grey.png')
  np.testing.assert_array_equal(grey, np.repeat(rgb[..., :1], 3, -1))
  sixteen, notes = images.read_rgb(tmp_path / 'sixteen_bit.png')
  np.testing.assert_array_equal(sixteen[..., 0], rgb[..., 0])  # v*257 -> v, not clipped to 255
  assert any('8 bits' in n for n in notes)
  rgba, notes = images.read_rgb(tmp_path / 'rgba.png')
  np.testing.assert_array_equal(rgba, rgb)
  assert any('alpha' in n for n in notes)
  rotated, notes = images.read_rgb(tmp_path / 'exif_rotated.jpg')
  assert rotated.shape == (SIZE // 2, SIZE, 3) and any('EXIF' in n for n in notes)


def test_all_scored_exits_0_and_usage_errors_exit_2(tmp_path, pixel_model, capsys):
  Image.fromarray(_rgb()).save(tmp_path / 'a.png')
  Image.fromarray(_rgb(48)).save(tmp_path / 'b.png')  # pixel models take any size
  assert attribute.main(['--model', str(pixel_model), str(tmp_path)]) == 0
  assert attribute.main(['--model', str(tmp_path / 'nowhere'), str(tmp_path)]) == 2
  assert 'expected a release .h5 file, a model bundle' in capsys.readouterr().err
  # A missing file is one failed record (exit 1); a folder with no images is a usage error.
  assert attribute.main(['--model', str(pixel_model), str(tmp_path / 'missing.png')]) == 1
  (tmp_path / 'empty').mkdir()
  assert attribute.main(['--model', str(pixel_model), str(tmp_path / 'empty')]) == 2
  with pytest.raises(SystemExit) as exit_info:
    attribute.main([str(tmp_path)])  # no --model
  assert exit_info.value.code == 2


def test_dct_model_crops_larger_and_refuses_smaller_images(tmp_path, dct_model, capsys):
  path, stats = dct_model
  big = _rgb(SIZE + 10)
  Image.fromarray(big).save(tmp_path / 'big.png')
  Image.fromarray(big[5:5 + SIZE, 5:5 + SIZE]).save(tmp_path / 'same.png')
  Image.fromarray(_rgb(SIZE - 4)).save(tmp_path / 'small.png')
  assert attribute.main(['--model', str(path), str(tmp_path)]) == 2  # no --dct-stats
  assert '--dct-stats' in capsys.readouterr().err
  model = attribute.load_model(path, stats)
  records = {r['path'].split('/')[-1]: r for r in attribute.attribute(
      model, sorted(tmp_path.glob('*.png')))}
  assert any('centre-cropped from 42x42 to 32x32' in n for n in records['big.png']['notes'])
  assert records['big.png']['p_fake'] == pytest.approx(records['same.png']['p_fake'], abs=1e-6)
  assert 'smaller than' in records['small.png']['error']


def test_cam_dir_writes_one_overlay_per_image_with_a_panel_per_output(tmp_path, pixel_model):
  Image.fromarray(_rgb()).save(tmp_path / 'a.png')
  assert attribute.main(['--model', str(pixel_model), '--cam-dir', str(tmp_path / 'cams'),
                         str(tmp_path / 'a.png')]) == 0
  overlay = np.asarray(Image.open(tmp_path / 'cams' / 'a_cam.png'))
  assert overlay.shape == (SIZE, 2 * SIZE, 3)  # primary panel + progan panel


def test_inputs_sharing_a_file_stem_get_one_overlay_each(tmp_path, pixel_model):
  for folder in ('a', 'b'):
    (tmp_path / folder).mkdir()
    Image.fromarray(_rgb()).save(tmp_path / folder / 'x.png')
  assert attribute.main(['--model', str(pixel_model), '--cam-dir', str(tmp_path / 'cams'),
                         str(tmp_path / 'a'), str(tmp_path / 'b')]) == 0
  assert sorted(p.name for p in (tmp_path / 'cams').iterdir()) == ['x_1_cam.png', 'x_cam.png']
