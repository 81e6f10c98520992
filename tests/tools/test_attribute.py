"""The attribute command on odd inputs, with a small synthetic release-layout model."""
import io
import json
import pathlib

import numpy as np
from PIL import Image
import pytest

from gta_jax.data import images
from gta_jax.io import outputs
from gta_jax.scoring import inference
from gta_jax.tools import attribute
import keras_reference as ref

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
  from gta_jax.models import spectral
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
  records = {r['path'].split('/')[-1]: r for r in outputs.load(out_json)}
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
  model = inference.load_model(path, stats)
  records = {r['path'].split('/')[-1]: r for r in inference.attribute(
      model, sorted(tmp_path.glob('*.png')))}
  assert any('centre-cropped from 42x42 to 32x32' in n for n in records['big.png']['notes'])
  assert records['big.png']['p_fake'] == pytest.approx(records['same.png']['p_fake'], abs=1e-6)
  assert 'smaller than' in records['small.png']['error']


def test_cam_dir_writes_one_overlay_per_image_with_a_panel_per_output(tmp_path, pixel_model):
  Image.fromarray(_rgb()).save(tmp_path / 'a.png')
  assert attribute.main(['--model', str(pixel_model), '--cam-dir', str(tmp_path / 'cams'),
                         str(tmp_path / 'a.png')]) == 0
  overlay = np.asarray(Image.open(tmp_path / 'cams' / 'a.png_cam.png'))
  assert overlay.shape == (SIZE, 2 * SIZE, 3)  # primary panel + progan panel


def test_inputs_sharing_a_file_stem_get_one_overlay_each(tmp_path, pixel_model):
  for folder in ('a', 'b'):
    (tmp_path / folder).mkdir()
    Image.fromarray(_rgb()).save(tmp_path / folder / 'x.png')
  assert attribute.main(['--model', str(pixel_model), '--cam-dir', str(tmp_path / 'cams'),
                         str(tmp_path / 'a'), str(tmp_path / 'b')]) == 0
  assert sorted(p.relative_to(tmp_path / 'cams').as_posix() for p in (tmp_path / 'cams').rglob(
      '*.png')) == ['a/x.png_cam.png', 'b/x.png_cam.png']


# ------------------------------------------------------------ bounded memory, buckets, odd inputs


def _score_alone(model, rgb):
  x, _, _ = inference.prepare_input(model, rgb)
  p_fake, p_heads, maps, _ = inference.score_batch(
      model.variables, x[None], input_kind='pixel', num_heads=len(model.spec.head_names),
      with_saliency=True)
  return float(p_fake[0]), np.asarray(p_heads)[:, 0], np.asarray(maps)[:, 0]


def test_mixed_sizes_share_padded_batches_and_score_as_each_image_alone(tmp_path, pixel_model,
                                                                        monkeypatch):
  """Padding + masking is exact: each image's scores and maps equal those it gets alone, while
  nine sizes compile a handful of programs and no batch exceeds the pixel budget."""
  model = inference.load_model(pixel_model)
  sizes = [(32, 32), (37, 51), (64, 40), (17, 90), (100, 100), (33, 33), (48, 47), (120, 31),
           (64, 64)]
  paths = []
  for i, (h, w) in enumerate(sizes):
    paths.append(tmp_path / f'{i}.png')
    Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
  batches, drawn_maps = [], {}
  real_score, real_overlay = inference.score_batch, inference._write_overlay

  def recording(variables, x, **kwargs):
    batches.append(x.shape)
    return real_score(variables, x, **kwargs)

  def recording_overlay(out, shown, maps, record, *args):
    drawn_maps[pathlib.Path(record['path']).name] = np.asarray(maps)
    return real_overlay(out, shown, maps, record, *args)

  monkeypatch.setattr(inference, 'score_batch', recording)
  monkeypatch.setattr(inference, '_write_overlay', recording_overlay)
  limits = inference.MemoryLimits(batch_pixels=96 * 96 * 2, batch_images=4)
  records = inference.attribute(model, paths, cam_dir=tmp_path / 'cams', limits=limits)
  monkeypatch.undo()
  assert all(r['error'] is None for r in records), records
  assert len({shape for shape in batches}) < len(sizes)  # shared programs, not one per size
  assert all(b * h * w <= max(limits.batch_pixels, h * w) for b, h, w, _ in batches)
  for path, record in zip(paths, records):
    rgb = np.asarray(Image.open(path))
    p_fake, p_heads, maps = _score_alone(model, rgb)
    assert record['p_fake'] == pytest.approx(p_fake, rel=1e-5, abs=1e-6)
    assert record['p_heads']['progan'] == pytest.approx(p_heads[0], rel=1e-5, abs=1e-6)
    # The overlay is drawn from the cropped padded map, which is the map alone; the pictures
    # agree but for colour-map steps that float rounding can cross (one value in 15,000 on one
    # CPU, by 2 levels).
    np.testing.assert_allclose(drawn_maps[path.name], maps, rtol=1e-4, atol=1e-6)
    alone = tmp_path / 'alone.png'
    inference._write_overlay(alone, rgb, maps, record, model, 'minmax')
    drawn = np.asarray(Image.open(tmp_path / 'cams' / f'{path.name}_cam.png')).astype(int)
    diff = np.abs(drawn - np.asarray(Image.open(alone)).astype(int))
    assert diff.max() <= 8 and np.mean(diff > 1) < 1e-3


def test_pooled_features_of_a_padded_image_are_those_it_gets_alone(pixel_model):
  """The kNN score compares pooled features; padding an image into a larger batch must not move
  them (models.pooled_features averages over the valid positions only)."""
  model = inference.load_model(pixel_model)
  kwargs = dict(input_kind='pixel', num_heads=len(model.spec.head_names), with_saliency=False,
                with_features=True)
  images = [RNG.integers(0, 256, size, dtype=np.uint8) for size in ((37, 51, 3), (64, 40, 3))]
  x = np.zeros((2, 64, 64, 3), np.float32)
  for row, rgb in enumerate(images):
    x[row, :rgb.shape[0], :rgb.shape[1]] = inference.prepare_input(model, rgb)[0]
  valid = np.array([rgb.shape[:2] for rgb in images], np.int32)
  padded = np.asarray(inference.score_batch(model.variables, x, valid_size=valid, **kwargs)[3])
  assert padded.shape == (2, 16 + 32 * len(model.spec.head_names))
  for row, rgb in enumerate(images):
    alone = inference.score_batch(model.variables, inference.prepare_input(model, rgb)[0][None],
                                  **kwargs)[3]
    np.testing.assert_allclose(padded[row], np.asarray(alone)[0], rtol=1e-5, atol=1e-6)
  unmasked = np.asarray(inference.score_batch(model.variables, x, **kwargs)[3])
  assert np.abs(unmasked[0] - padded[0]).max() > 1e-3  # the padding would move them unmasked


def test_reading_scoring_and_freeing_batch_by_batch_bounds_what_is_held(tmp_path, pixel_model,
                                                                       monkeypatch):
  """Decoded images alive at once (counted as they are created and garbage-collected) never
  exceed the pixel budget plus one image, however many files there are."""
  import weakref
  model = inference.load_model(pixel_model)
  paths = []
  for i in range(30):
    side = (32, 64, 96)[i % 3]
    paths.append(tmp_path / f'{i:02d}.png')
    Image.fromarray(RNG.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(paths[-1])
  limits = inference.MemoryLimits(batch_pixels=128 * 128, batch_images=64)
  alive, peak = [0], [0]
  real_pending = inference._Pending

  def counting(index, x, shown, notes):
    item = real_pending(index, x, shown, notes)
    pixels = shown.shape[0] * shown.shape[1]
    alive[0] += pixels
    peak[0] = max(peak[0], alive[0])
    weakref.finalize(item, lambda: alive.__setitem__(0, alive[0] - pixels))
    return item

  monkeypatch.setattr(inference, '_Pending', counting)
  records = inference.attribute(model, paths, limits=limits)
  assert all(r['error'] is None for r in records)
  assert alive[0] == 0
  total = sum(((32, 64, 96)[i % 3]) ** 2 for i in range(30))
  assert peak[0] <= limits.batch_pixels + 96 * 96 < total


def test_animations_get_a_note_and_tiny_or_thin_images_are_refused(tmp_path, pixel_model):
  frames = [Image.fromarray(_rgb()) for _ in range(3)]
  frames[0].save(tmp_path / 'anim.gif', save_all=True, append_images=frames[1:])
  frames[0].save(tmp_path / 'anim.png', save_all=True, append_images=frames[1:])  # APNG
  frames[0].save(tmp_path / 'pages.tif', save_all=True, append_images=frames[1:])
  Image.fromarray(_rgb(1)).save(tmp_path / 'one_pixel.png')
  Image.fromarray(RNG.integers(0, 256, (2, 4000, 3), dtype=np.uint8)).save(tmp_path / 'thin.png')
  model = inference.load_model(pixel_model)
  records = {r['path'].split('/')[-1]: r for r in inference.attribute(
      model, images.list_images([tmp_path]))}
  for name in ('anim.gif', 'anim.png', 'pages.tif'):
    assert records[name]['error'] is None and 'first of 3 frames scored' in records[name]['notes']
  for name in ('one_pixel.png', 'thin.png'):
    assert records[name]['verdict'] == 'error' and 'too small' in records[name]['error']


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path, pixel_model, capsys):
  Image.fromarray(_rgb(200)).save(tmp_path / 'large.png')
  Image.fromarray(_rgb()).save(tmp_path / 'small.png')
  out = tmp_path / 'out.json'
  assert attribute.main(['--model', str(pixel_model), '--max-pixels', str(100 * 100),
                         '--json', str(out), str(tmp_path / 'large.png'),
                         str(tmp_path / 'small.png')]) == 1
  large, small = outputs.load(out)
  assert 'over the 10,000-pixel limit' in large['error'] and small['error'] is None


def test_a_non_finite_score_is_an_error_record_and_the_json_is_strict(tmp_path, pixel_model,
                                                                      monkeypatch):
  Image.fromarray(_rgb()).save(tmp_path / 'a.png')
  Image.fromarray(_rgb()).save(tmp_path / 'b.png')
  real_score = inference.score_batch

  def first_is_nan(*args, **kwargs):
    p_fake, p_heads, maps, features = real_score(*args, **kwargs)
    return np.where(np.arange(len(p_fake)) == 0, np.nan, p_fake), p_heads, maps, features

  monkeypatch.setattr(inference, 'score_batch', first_is_nan)
  out = tmp_path / 'out.json'
  assert attribute.main(['--model', str(pixel_model), '--json', str(out), str(tmp_path)]) == 1
  def refuse(constant):
    raise AssertionError(f'non-standard JSON constant {constant}')

  first, second = outputs.payload(json.loads(out.read_text(), parse_constant=refuse))  # strict
  assert first['verdict'] == 'error' and 'non-finite' in first['error'] and first['p_fake'] is None
  assert second['error'] is None


def test_outputs_are_checked_before_scoring_and_nothing_is_overwritten(tmp_path, pixel_model,
                                                                       capsys, monkeypatch):
  image = tmp_path / 'a.png'
  Image.fromarray(_rgb()).save(image)
  flag_named = tmp_path / '--json'  # a file named like the flag, e.g. from a shell glob
  Image.fromarray(_rgb()).save(flag_named, format='PNG')
  before = flag_named.read_bytes()
  scored = []
  monkeypatch.setattr(inference, 'attribute', lambda *a, **k: scored.append(1) or [])
  # `attribute --model M *` with that file: argparse reads it as --json <next file>.
  assert attribute.main(['--model', str(pixel_model), '--json', str(image), str(flag_named)]) == 2
  assert 'not a JSON file' in capsys.readouterr().err and image.read_bytes()
  blocked = tmp_path / 'a_file'
  blocked.write_text('x')
  for flag in ('--json', '--cam-dir'):
    assert attribute.main(['--model', str(pixel_model), flag, str(blocked / 'sub' / 'out'),
                           str(image)]) == 2
    assert 'cannot create' in capsys.readouterr().err
  assert attribute.main(['--model', str(pixel_model), '--json', str(tmp_path), str(image)]) == 2
  assert scored == [] and flag_named.read_bytes() == before
  # "--" ends the options: the flag-named file is an input like any other.
  monkeypatch.undo()
  out = tmp_path / 'out.json'
  assert attribute.main(['--model', str(pixel_model), '--json', str(out), '--',
                         str(flag_named)]) == 0
  assert outputs.load(out)[0]['error'] is None


def test_file_names_that_are_not_utf8_are_printed_and_recorded(tmp_path, pixel_model, capsys):
  import os
  name = os.fsdecode(b'caf\xe9.png')
  Image.fromarray(_rgb()).save(tmp_path / name, format='PNG')
  out = tmp_path / 'out.json'
  assert attribute.main(['--model', str(pixel_model), '--json', str(out), str(tmp_path)]) == 0
  record, = outputs.load(out)
  assert record['path'].endswith('caf\\xe9.png') and record['error'] is None
  assert 'caf\\xe9.png' in capsys.readouterr().out


# ------------------------------------------------------------------------- outputs: --json, cams


def test_json_replaces_its_own_earlier_output_and_another_json_only_with_overwrite(
    tmp_path, pixel_model, capsys):
  Image.fromarray(_rgb()).save(tmp_path / 'a.png')
  out = tmp_path / 'out.json'
  out.write_text('{"my": "settings"}\n')
  argv = ['--model', str(pixel_model), '--json', str(out), str(tmp_path / 'a.png')]
  assert attribute.main(argv) == 2
  assert 'was not written by attribute' in capsys.readouterr().err
  assert json.loads(out.read_text()) == {'my': 'settings'}
  assert attribute.main(argv + ['--overwrite']) == 0
  written = json.loads(out.read_text())
  assert written['written_by'] == 'gta_jax.attribute' and len(written['records']) == 1
  assert outputs.load(out) == written['records']
  assert attribute.main(argv) == 0  # its own earlier output: replaced without asking


def _x_images(root):
  """a/x.png, b/x.png and c/x_1.png: three inputs whose overlays a stem-and-counter name
  collided on."""
  for folder, name in (('a', 'x.png'), ('b', 'x.png'), ('c', 'x_1.png')):
    (root / folder).mkdir(parents=True)
    Image.fromarray(_rgb()).save(root / folder / name)
  return [root / 'a', root / 'b', root / 'c']


def test_every_input_gets_its_own_overlay_named_after_its_path(tmp_path, pixel_model):
  inputs = _x_images(tmp_path / 'in')
  cams, out = tmp_path / 'cams', tmp_path / 'out.json'
  assert attribute.main(['--model', str(pixel_model), '--cam-dir', str(cams), '--json', str(out)]
                        + [str(p) for p in inputs]) == 0
  assert len(list(cams.rglob('*.png'))) == 3
  records = outputs.load(out)
  assert [r['overlay'] for r in records] == [
      str(cams / 'a' / 'x.png_cam.png'), str(cams / 'b' / 'x.png_cam.png'),
      str(cams / 'c' / 'x_1.png_cam.png')]
  assert all(pathlib.Path(r['overlay']).is_file() for r in records)
  manifest = json.loads((cams / 'overlays.json').read_text())
  assert manifest['written_by'] == 'gta_jax.attribute'
  assert manifest['files'] == {'a/x.png_cam.png': str(inputs[0] / 'x.png'),
                               'b/x.png_cam.png': str(inputs[1] / 'x.png'),
                               'c/x_1.png_cam.png': str(inputs[2] / 'x_1.png')}
  # x.png and x.jpg in one folder, and one file alone: named by the file's whole name.
  Image.fromarray(_rgb()).save(inputs[0] / 'x.jpg')
  names = inference.overlay_names([inputs[0] / 'x.png', inputs[0] / 'x.jpg'])
  assert names == ['x.png_cam.png', 'x.jpg_cam.png']
  assert inference.overlay_names([inputs[2] / 'x_1.png']) == ['x_1.png_cam.png']
  # A rerun into the same folder replaces its own overlays; nothing else is there to refuse.
  assert attribute.main(['--model', str(pixel_model), '--cam-dir', str(cams), str(inputs[0])]) == 0


def test_cam_dir_never_replaces_inputs_or_files_it_did_not_write(tmp_path, pixel_model, capsys,
                                                                 monkeypatch):
  inputs = _x_images(tmp_path / 'in')
  image = inputs[0] / 'x.png'
  before = image.read_bytes()
  loaded = []
  monkeypatch.setattr(attribute, 'load_model', lambda *a: loaded.append(a) or 1 / 0)
  cases = {  # --cam-dir: what the refusal says
      inputs[0]: 'an input of this command',           # the input folder itself
      tmp_path / 'in': 'an input of this command',     # a folder holding the inputs
      inputs[0] / 'cams': 'which this command reads',  # inside an input folder: read next time
  }
  for cam_dir, message in cases.items():
    assert attribute.main(['--model', str(pixel_model), '--cam-dir', str(cam_dir), str(inputs[0]),
                           str(inputs[1])]) == 2
    assert message in capsys.readouterr().err
  # An input file's folder: the same.
  assert attribute.main(['--model', str(pixel_model), '--cam-dir', str(inputs[0]), str(image)]) == 2
  assert 'an input of this command' in capsys.readouterr().err
  # A folder of someone else's files: refused before work, naming them.
  mine = tmp_path / 'mine'
  (mine / 'src').mkdir(parents=True)
  (mine / 'src' / 'thesis.tex').write_text('chapter 1')
  (mine / 'x.png_cam.png').write_text('not an overlay')
  assert attribute.main(['--model', str(pixel_model), '--cam-dir', str(mine), str(image)]) == 2
  err = capsys.readouterr().err
  assert 'did not write' in err and 'src/thesis.tex' in err and 'x.png_cam.png' in err
  assert loaded == [] and image.read_bytes() == before
  assert not (inputs[0] / 'cams').exists()
  assert (mine / 'x.png_cam.png').read_text() == 'not an overlay'
  # With --overwrite it writes beside them (a file of an overlay's name is replaced).
  monkeypatch.undo()
  assert attribute.main(['--model', str(pixel_model), '--cam-dir', str(mine), '--overwrite',
                         str(image)]) == 0
  assert (mine / 'src' / 'thesis.tex').read_text() == 'chapter 1'
  assert Image.open(mine / 'x.png_cam.png').size == (2 * SIZE, SIZE)


def test_json_may_sit_in_the_cam_dir_but_is_never_its_list_of_overlays(tmp_path, pixel_model,
                                                                       capsys):
  Image.fromarray(_rgb()).save(tmp_path / 'a.png')
  cams = tmp_path / 'cams'
  argv = ['--model', str(pixel_model), '--cam-dir', str(cams), str(tmp_path / 'a.png')]
  assert attribute.main(argv + ['--json', str(cams / 'overlays.json')]) == 2
  assert 'list of overlays' in capsys.readouterr().err
  assert attribute.main(argv + ['--json', str(cams / 'records.json')]) == 0
  assert attribute.main(argv + ['--json', str(cams / 'records.json')]) == 0  # both its own
  assert attribute.main(argv) == 0  # its records beside its overlays are not a stranger's file
  assert sorted(p.name for p in cams.iterdir()) == ['a.png_cam.png', 'overlays.json',
                                                    'records.json']


def test_outputs_of_the_version_before_the_mark_are_replaced_without_overwrite(tmp_path,
                                                                              pixel_model):
  """The review's upgrade case: a verdicts.json (a plain list of records) and a cam dir of
  *_cam.png overlays without a manifest, both written before outputs were marked, and a
  .DS_Store a file manager left there; the README's command runs again without --overwrite."""
  images = tmp_path / 'in'
  images.mkdir()
  Image.fromarray(RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(images / 'x.png')
  (tmp_path / 'verdicts.json').write_text(json.dumps(
      [{'path': str(images / 'x.png'), 'p_fake': 0.4, 'verdict': 'real', 'error': None}]))
  cams = tmp_path / 'cams'
  cams.mkdir()
  Image.fromarray(np.zeros((SIZE, 2 * SIZE, 3), np.uint8)).save(cams / 'x_cam.png')
  (cams / '.DS_Store').write_bytes(b'\0\0\0\1Bud1')
  assert attribute.main(['--model', str(pixel_model), '--json', str(tmp_path / 'verdicts.json'),
                         '--cam-dir', str(cams), '--', str(images)]) == 0
  assert json.loads((tmp_path / 'verdicts.json').read_text())['written_by'] == 'gta_jax.attribute'
