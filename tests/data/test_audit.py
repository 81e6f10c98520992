"""The shortcut audit: container features read back from files written here, the separability
check on planted shortcuts and on a set with nothing to find, and the flip test's mechanics."""
import io

import cv2
import numpy as np
from PIL import Image
import pytest

from gta_jax.data import audit
from gta_jax.data import images as images_lib
from gta_jax.scoring import inference
import keras_reference as ref

RNG = np.random.default_rng(0)


def _rgb(size=32, seed=None):
  rng = RNG if seed is None else np.random.default_rng(seed)
  # smooth-ish content, so JPEG and PNG sizes are those of an image, not of noise
  base = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
  return cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)


def _encode(rgb, fmt='PNG', **kwargs) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(rgb).save(buffer, format=fmt, **kwargs)
  return buffer.getvalue()


def _icc() -> bytes:
  from PIL import ImageCms
  return ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()


def test_features_are_read_back_from_what_was_written():
  rgb = _rgb(48)
  png = audit.container_features(_encode(rgb))
  assert png | {'file_size': 0, 'bits_per_pixel': 0} == {
      'format': 'PNG', 'size': '48x48', 'mode': 'RGB', 'bit_depth': 8, 'jpeg_quality': 'none',
      'subsampling': 'none', 'exif': False, 'icc': False, 'file_size': 0, 'bits_per_pixel': 0}
  assert png['file_size'] == len(_encode(rgb))
  assert png['bits_per_pixel'] == pytest.approx(8 * png['file_size'] / 48 ** 2)

  q75 = audit.container_features(_encode(rgb[:40], 'JPEG', quality=75))
  assert (q75['format'], q75['size'], q75['jpeg_quality'], q75['subsampling']) == (
      'JPEG', '48x40', '75', '4:2:0')
  q90 = audit.container_features(_encode(rgb, 'JPEG', quality=90, subsampling=0))
  assert (q90['jpeg_quality'], q90['subsampling'], q90['exif'], q90['icc']) == (
      '90', '4:4:4', False, False)

  exif = Image.Exif()
  exif[0x010F] = 'a camera'
  tagged = audit.container_features(_encode(rgb, 'JPEG', quality=95, exif=exif.tobytes(),
                                            icc_profile=_icc()))
  assert (tagged['exif'], tagged['icc'], tagged['jpeg_quality']) == (True, True, '95')
  assert audit.container_features(_encode(rgb, icc_profile=_icc()))['icc'] is True

  grey16 = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60)
  buffer = io.BytesIO()
  Image.fromarray(grey16).save(buffer, format='PNG')
  f = audit.container_features(buffer.getvalue())
  assert (f['mode'], f['bit_depth']) == ('I;16', 16)
  ok, rgb16 = cv2.imencode('.png', (rgb.astype(np.uint16) * 257))  # 48-bit RGB: PIL opens as RGB
  assert ok and audit.container_features(rgb16.tobytes())['bit_depth'] == 16
  grey = audit.container_features(_encode(rgb[..., 0]))
  assert (grey['mode'], grey['bit_depth']) == ('L', 8)
  grey_jpeg = audit.container_features(_encode(rgb[..., 0], 'JPEG', quality=80))
  assert (grey_jpeg['jpeg_quality'], grey_jpeg['subsampling']) == ('80', 'greyscale')

  for bad in (b'', b'not an image', _encode(rgb)[:20]):
    with pytest.raises(images_lib.ImageReadError):
      audit.container_features(bad)


def _tree(root, sources: dict):
  """sources: {'real/name' | 'fake/name': [(bytes, suffix), ...]} -> the folder tree."""
  for folder, files in sources.items():
    (root / folder).mkdir(parents=True)
    for n, (data, suffix) in enumerate(files):
      (root / folder / f'{n:03d}{suffix}').write_bytes(data)
  return root


def _read(root):
  items, failed = audit.read_features(audit.folder_items(root))
  assert not failed
  return items


def _checks(report):
  return {c['question']: c for c in report['checks']}


def test_fakes_saved_as_png_and_reals_as_jpeg_are_flagged_naming_the_format(tmp_path):
  real = [(_encode(_rgb(), 'JPEG', quality=90), '.jpg') for _ in range(24)]
  fakes = {f'fake/gan{k}': [(_encode(_rgb()), '.png') for _ in range(12)] for k in 'ab'}
  report = audit.audit(_read(_tree(tmp_path, {'real/photos': real, **fakes})))
  assert report['flagged']
  check = _checks(report)['real vs fake']
  assert check['counts'] == {'real': 24, 'fake': 24}
  fmt = check['features']['format']
  assert fmt['balanced_accuracy'] == 1.0 and fmt['flagged'] and fmt['p_value'] <= audit.FLAG_P
  line = next(f for f in check['flags'] if f.startswith('format:'))
  assert 'PNG for every fake image' in line and 'JPEG for every real image' in line
  assert check['all_container_features']['flagged']
  assert report['summary']['photos']['format'] == {'JPEG': 24}
  assert report['summary']['gana']['format'] == {'PNG': 12}
  assert 'FLAG format: PNG for every fake image' in audit.format_report(report)


def test_identical_containers_stay_quiet(tmp_path):
  sources = {'real/photos': [(_encode(_rgb()), '.png') for _ in range(20)]}
  sources |= {f'fake/gan{k}': [(_encode(_rgb()), '.png') for _ in range(10)] for k in 'ab'}
  report = audit.audit(_read(_tree(tmp_path, sources)))
  assert not report['flagged']
  for check in report['checks']:
    assert check['flags'] == []
    for feature in audit.CONTAINER_FEATURES:  # constant: a table that predicts one class
      assert check['features'][feature]['balanced_accuracy'] == 0.5
      assert not check['features'][feature]['flagged']
  assert 'nothing flagged' in audit.format_report(report)


def test_one_source_saved_at_another_size_is_found_against_the_others(tmp_path):
  sources = {'real/photos': [(_encode(_rgb()), '.png') for _ in range(24)]}
  sources |= {f'fake/gan{k}': [(_encode(_rgb()), '.png') for _ in range(12)] for k in 'ab'}
  sources['fake/ganc'] = [(_encode(_rgb(40)), '.png') for _ in range(12)]
  checks = _checks(audit.audit(_read(_tree(tmp_path, sources))))
  ganc = checks['ganc vs the other sources']
  assert ganc['features']['size']['flagged']
  assert any(f.startswith('size: 40x40 for every ganc image; 32x32 for every other image')
             for f in ganc['flags'])
  assert not checks['gana vs the other sources']['features']['size']['flagged']


def test_too_few_images_are_not_judged_and_chance_is_not_flagged():
  items = [audit.Item('s', label, 'x', lambda: b'', {f: 'v' for f in audit.CONTAINER_FEATURES}
                      | {'file_size': 1, 'bits_per_pixel': 1.0}) for label in (0, 1, 1)]
  result = audit.check(items, np.array([0, 1, 1]), ('format',))
  assert result['balanced_accuracy'] is None and not result['flagged']
  # A value split at random between the classes: near chance, never flagged.
  rng = np.random.default_rng(3)
  items = [audit.Item('s', int(label), 'x', lambda: b'',
                      {'format': str(rng.integers(2)), **{f: 'v' for f in audit.CONTAINER_FEATURES
                                                          if f != 'format'},
                       'file_size': 1, 'bits_per_pixel': 1.0})
           for label in rng.integers(0, 2, 200)]
  result = audit.check(items, np.array([i.label for i in items]), ('format',))
  assert abs(result['balanced_accuracy'] - 0.5) < 0.1 and not result['flagged']


def test_reencodings_are_what_the_docs_say():
  rgb = _rgb(40)
  data, suffix = audit.reencode(rgb, 'png')
  assert suffix == '.png' and np.array_equal(np.asarray(Image.open(io.BytesIO(data))), rgb)
  for quality in (95, 75):
    data, suffix = audit.reencode(rgb, f'jpeg{quality}')
    f = audit.container_features(data)
    assert (suffix, f['jpeg_quality'], f['subsampling']) == ('.jpg', str(quality), '4:2:0')
  data, _ = audit.reencode(rgb, 'resize0.9')
  assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))),
                        cv2.resize(rgb, (36, 36), interpolation=cv2.INTER_CUBIC))
  data, _ = audit.reencode(rgb, 'crop8')
  assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), rgb[:32, :32])
  with pytest.raises(ValueError):
    audit.reencode(rgb, 'gif')


def test_flip_test_counts_changes_per_source_and_the_lossless_control_changes_nothing(tmp_path):
  path = tmp_path / 'attribution_ganfp_progan.h5'
  ref.write_h5(path, ref.random_layers(np.random.default_rng(1),
                                       ref.layer_shapes(3, True, 32, ('a',))), (32, 32, 3))
  model = inference.load_model(path)
  sources = {'real/photos': [(_encode(_rgb(), 'JPEG', quality=90), '.jpg') for _ in range(5)],
             'fake/gana': [(_encode(_rgb()), '.png') for _ in range(3)]}
  items = _read(_tree(tmp_path / 'tree', sources))
  flip = audit.flip_test(model, items, per_source=4)
  assert set(flip['sources']) == {'photos', 'gana'}
  photos = flip['sources']['photos']
  assert (photos['images'], photos['label'], flip['sources']['gana']['images']) == (4, 'real', 3)
  for source in flip['sources'].values():
    png = source['variants']['png']
    assert (png['verdict_changed'], png['fake_call_changed'], png['mean_abs_dp_fake']) == (0, 0, 0)
    for stats in source['variants'].values():
      assert stats['scored'] + stats['errors'] == source['images']
      assert stats['to_fake'] + stats['to_real'] == stats['fake_call_changed']
      assert stats['fake_call_changed'] <= stats['verdict_changed']  # a crossing changes it
  # Re-encoding does change this random model's scores a little: the counts come from them.
  assert flip['sources']['photos']['variants']['jpeg75']['mean_abs_dp_fake'] > 0
  assert 'flip test' in audit.format_report({**audit.audit(items), 'flip_test': flip})
