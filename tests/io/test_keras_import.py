"""Import of release .h5 models, checked against an independent numpy forward pass of the arrays."""
import json
import pathlib

import h5py
import jax
import numpy as np
from PIL import Image
import pytest

from conftest import RELEASE_STATS
from conftest import RELEASE_WEIGHTS
from conftest import requires_release
from gta_jax.io import checkpoints
from gta_jax.io import keras_import
from gta_jax.models import networks
from gta_jax.models import spectral
from gta_jax.scoring import inference
from gta_jax.scoring import openset
from gta_jax.tools import keras_import as keras_import_tool
import keras_reference as ref

RNG = np.random.default_rng(0)


def _predict(spec, variables, x):
  out = networks.predict(variables, np.asarray(x, np.float32), input_kind=spec.input_kind,
                       num_heads=len(spec.head_names))
  p_fake = np.asarray(jax.nn.sigmoid(out.primary.logit))
  p_heads = np.asarray(jax.nn.sigmoid(out.heads.logit)) if spec.head_names else None
  return p_fake, p_heads


@pytest.mark.parametrize('in_channels, gap, heads', [
    (3, True, ()), (3, True, ('a',)), (1, False, ('a',)), (3, True, ('a1', 'a2', 'a3'))])
def test_synthetic_release_file_imports_and_matches_numpy_forward(tmp_path, in_channels, gap, heads):
  size = 32
  layers = ref.random_layers(RNG, ref.layer_shapes(in_channels, gap, size, heads))
  path = tmp_path / 'attribution_ganfp_progan.h5'
  ref.write_h5(path, layers, (size, size, in_channels))
  spec, variables = keras_import.import_h5(path)
  assert spec.input_kind == ('pixel' if gap else 'dct') and spec.image_size == size
  assert spec.head_names == (('progan',) if heads == ('a',) else heads)
  x = RNG.normal(0, 1, (3, size, size, in_channels))
  p_fake, p_heads = _predict(spec, variables, x)
  expected_fake, expected_heads = ref.forward(ref.read_layers(path), x, heads)
  np.testing.assert_allclose(p_fake, expected_fake, atol=1e-5)
  for k, prefix in enumerate(heads):
    np.testing.assert_allclose(p_heads[k], expected_heads[prefix], atol=1e-5)


def test_bundle_round_trip_keeps_weights_and_refuses_tampering(tmp_path):
  layers = ref.random_layers(RNG, ref.layer_shapes(1, False, 16, ('a',)))
  ref.write_h5(tmp_path / 'm.h5', layers, (16, 16, 1))
  mean, std = RNG.normal(0, 1, (16, 16)), RNG.uniform(0.5, 2, (16, 16))
  stats_dir = tmp_path / 'stats'
  spectral.DctStats(mean=mean, std=std, count=1).save(stats_dir)
  assert keras_import_tool.main([str(tmp_path / 'm.h5'), str(tmp_path / 'bundle'),
                            '--dct-stats', str(stats_dir), '--head-names', 'mine']) == 0
  spec, variables, (loaded_mean, loaded_std) = checkpoints.load_model_bundle(tmp_path / 'bundle')
  assert spec.head_names == ('mine',) and spec.input_kind == 'dct'
  np.testing.assert_array_equal(loaded_mean, mean)
  np.testing.assert_allclose(loaded_std, std, rtol=1e-15)
  _, direct = keras_import.import_h5(tmp_path / 'm.h5')
  jax.tree.map(np.testing.assert_array_equal, variables, direct)
  # A bundle whose primary changed no longer matches its recorded digest.
  record = json.loads((tmp_path / 'bundle' / 'model.json').read_text())
  record['primary_digest'] = '0' * 64
  (tmp_path / 'bundle' / 'model.json').write_text(json.dumps(record))
  with pytest.raises(ValueError, match='digest'):
    checkpoints.load_model_bundle(tmp_path / 'bundle')


def test_dct_model_without_stats_is_a_usage_error(tmp_path, capsys):
  layers = ref.random_layers(RNG, ref.layer_shapes(1, False, 16, ()))
  ref.write_h5(tmp_path / 'm.h5', layers, (16, 16, 1))
  assert keras_import_tool.main([str(tmp_path / 'm.h5'), str(tmp_path / 'out')]) == 2
  assert '--dct-stats' in capsys.readouterr().err


def test_foreign_h5_files_get_clear_errors(tmp_path):
  with h5py.File(tmp_path / 'x.h5', 'w') as h5:
    h5.create_dataset('data', data=np.zeros(3))
  with pytest.raises(keras_import.H5ImportError, match='model_weights'):
    keras_import.import_h5(tmp_path / 'x.h5')
  (tmp_path / 'y.h5').write_bytes(b'garbage')
  with pytest.raises(keras_import.H5ImportError, match='not a readable HDF5'):
    keras_import.import_h5(tmp_path / 'y.h5')
  layers = ref.random_layers(RNG, ref.layer_shapes(3, True, 16, ()))
  layers['dConv_03']['kernel'] = layers['dConv_03']['kernel'][..., :8]  # wrong width
  layers['dConv_03']['bias'] = layers['dConv_03']['bias'][:8]
  ref.write_h5(tmp_path / 'z.h5', layers, (16, 16, 3))
  with pytest.raises(keras_import.H5ImportError, match='conv_03'):
    keras_import.import_h5(tmp_path / 'z.h5')


def test_head_name_from_release_file_names():
  assert keras_import.head_name_from_filename('attribution_ganfp_progan_dct_aug.h5') == 'progan'
  assert keras_import.head_name_from_filename('attribution_faceshqp_stylegan2.h5') == 'stylegan2'
  assert keras_import.head_name_from_filename('primary_ganfp_crop_es20.h5') is None


# --- the authors' released files, when present -------------------------------------------------

RELEASE_TOTALS = {('pixel', 0): 27_261, ('dct', 0): 35_367, ('pixel', 1): 48_606, ('dct', 1): 64_872}


@requires_release
def test_all_41_release_files_import_with_release_parameter_counts():
  files = sorted(RELEASE_WEIGHTS.rglob('*.h5'))
  assert len(files) == 41
  for path in files:
    spec, variables = keras_import.import_h5(path)
    assert networks.count_parameters(variables) == RELEASE_TOTALS[
        (spec.input_kind, len(spec.head_names))], path.name
    if path.name.startswith('attribution'):
      assert spec.head_names == (keras_import.head_name_from_filename(path),)


def _test_images(directory, size, count=6):
  """PNGs a user might score: natural-image crops from skimage's bundled photos plus noise."""
  from skimage import data
  sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
  paths = []
  for i in range(count):
    photo = sources[i % len(sources)]
    top, left = RNG.integers(0, photo.shape[0] - size), RNG.integers(0, photo.shape[1] - size)
    crop = photo[top:top + size, left:left + size]
    if i >= len(sources):
      crop = np.clip(crop + RNG.normal(0, 8, crop.shape), 0, 255).astype(np.uint8)
    paths.append(directory / f'img_{i}.png')
    Image.fromarray(crop).save(paths[-1])
  return paths


@requires_release
@pytest.mark.parametrize('relative, stats', [
    ('primary_ganfp/primary_ganfp.h5', None),
    ('primary_ganfp_dct/primary_ganfp_dct_aug.h5', 'ganfp'),
    ('attribution_ganfp_progan/attribution_ganfp_progan_aug.h5', None),
    ('attribution_ganfp_cramergan_dct/attribution_ganfp_cramergan_dct.h5', 'ganfp'),
    ('attribution_faceshqp/attribution_faceshqp_tpdne.h5', None),
])
def test_release_models_through_attribute_match_numpy_keras_forward(tmp_path, relative, stats):
  """Probabilities from `attribute` on PNG inputs equal the release model's within 1e-4."""
  path = RELEASE_WEIGHTS / relative
  model = inference.load_model(path, RELEASE_STATS / stats if stats else None)
  images = _test_images(tmp_path, model.spec.image_size)
  records = inference.attribute(model, images)
  layers = ref.read_layers(path)
  for record, image_path in zip(records, images):
    assert record['error'] is None
    if stats:
      mean = np.load(RELEASE_STATS / stats / 'mean.npy')
      std = np.load(RELEASE_STATS / stats / 'std_dev.npy')
      x = ref.dct_input(str(image_path), mean, std)
    else:
      x = ref.pixel_input(np.asarray(Image.open(image_path).convert('RGB')))
    p_fake, p_heads = ref.forward(layers, x)
    assert abs(record['p_fake'] - p_fake[0]) < 1e-4, (image_path, record, p_fake)
    for name, p in record['p_heads'].items():
      assert abs(p - p_heads['a'][0]) < 1e-4, (image_path, name, p, p_heads)


# ------------------------------------------------------------------------ hostile and careless input


def _pixel_h5(path, heads=()):
  ref.write_h5(path, ref.random_layers(RNG, ref.layer_shapes(3, True, 16, heads)), (16, 16, 3))
  return path


def _replace_bias(path, make):
  """Swaps dConv_01's bias dataset for what `make(layer_group, name)` creates there."""
  with h5py.File(path, 'r+') as h5:
    layer = h5['model_weights/dConv_01']
    del layer['dConv_01/bias:0']
    make(layer, 'dConv_01/bias:0')


def test_h5_weights_stored_outside_the_file_are_refused_before_reading(tmp_path):
  """External storage, external and soft links, virtual datasets: a crafted file must not copy a
  local file (here a 'secret') into a bundle a user may share."""
  secret = tmp_path / 'secret.txt'
  secret.write_bytes(np.arange(3, dtype=np.float32).tobytes())
  other = tmp_path / 'other.h5'
  with h5py.File(other, 'w') as h5:
    h5['bias'] = np.zeros(3, np.float32)
  crafted = {
      'external storage': lambda g, n: g.create_dataset(n, (3,), np.float32,
                                                        external=[(str(secret), 0, 12)]),
      'external link': lambda g, n: g.__setitem__(n, h5py.ExternalLink(str(other), '/bias')),
      'soft link': lambda g, n: g.__setitem__(n, h5py.SoftLink('/model_weights/dConv_02/dConv_02/bias:0')),
  }

  def virtual(group, name):
    layout = h5py.VirtualLayout((3,), np.float32)
    layout[:] = h5py.VirtualSource(str(other), 'bias', shape=(3,))
    group.create_virtual_dataset(name, layout)

  crafted['virtual dataset'] = virtual
  for kind, make in crafted.items():
    path = _pixel_h5(tmp_path / f'{kind.replace(" ", "_")}.h5')
    _replace_bias(path, make)
    with pytest.raises(keras_import.H5ImportError, match='outside the file|links'):
      keras_import.import_h5(path)
    assert keras_import_tool.main([str(path), str(tmp_path / kind)]) == 2
    assert not (tmp_path / kind).exists()


def test_h5_declaring_a_huge_dataset_is_refused_without_reading_it(tmp_path):
  path = _pixel_h5(tmp_path / 'huge.h5')
  # Chunked, never written: a tiny file declaring 4 G float32 values (16 GB).
  _replace_bias(path, lambda g, n: g.create_dataset(n, (1 << 32,), np.float32, chunks=(1024,)))
  assert path.stat().st_size < 1 << 20
  with pytest.raises(keras_import.H5ImportError, match='declares shape'):
    keras_import.import_h5(path)


def test_malformed_h5_structures_and_non_finite_weights_get_one_clear_error(tmp_path):
  path = _pixel_h5(tmp_path / 'listed.h5')
  with h5py.File(path, 'r+') as h5:
    h5['model_weights'].attrs['layer_names'] = [b'dConv_01', b'ghost']
  with pytest.raises(keras_import.H5ImportError, match="'ghost' is listed but not stored"):
    keras_import.import_h5(path)
  path = _pixel_h5(tmp_path / 'config.h5')
  # Was: JSON of another structure crashed (AttributeError, TypeError, IndexError).
  for config in (b'{not json', b'{"config": 5}', b'{"config": {"layers": 5}}',
                 b'{"config": {"layers": [5]}}', b'{"config": {"layers": [{"config": []}]}}',
                 b'{"config": {"layers": [{"config": {"batch_input_shape": "x"}}]}}'):
    with h5py.File(path, 'r+') as h5:
      h5.attrs['model_config'] = config
    with pytest.raises(keras_import.H5ImportError, match='malformed'):
      keras_import.import_h5(path)
  path = _pixel_h5(tmp_path / 'text.h5')
  _replace_bias(path, lambda g, n: g.create_dataset(n, data=np.array([b'a', b'b', b'c'])))
  with pytest.raises(keras_import.H5ImportError, match='not floating point'):
    keras_import.import_h5(path)
  for bad in (np.nan, np.inf):
    layers = ref.random_layers(RNG, ref.layer_shapes(3, True, 16, ()))
    layers['dBNorm_03']['moving_variance'][0] = bad
    ref.write_h5(tmp_path / 'nan.h5', layers, (16, 16, 3))
    with pytest.raises(keras_import.H5ImportError, match=r"bn_03.*NaN or infinite"):
      keras_import.import_h5(tmp_path / 'nan.h5')


def test_keras_import_refuses_to_replace_a_folder_unless_asked(tmp_path, capsys):
  h5 = _pixel_h5(tmp_path / 'm.h5')
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'notes.txt').write_text('mine')
  assert keras_import_tool.main([str(h5), str(out)]) == 2
  assert 'not empty' in capsys.readouterr().err
  assert keras_import_tool.main([str(h5), str(out), '--overwrite']) == 2  # not a bundle: kept
  assert (out / 'notes.txt').read_text() == 'mine' and sorted(out.iterdir()) == [out / 'notes.txt']
  bundle = tmp_path / 'bundle'
  assert keras_import_tool.main([str(h5), str(bundle)]) == 0
  assert keras_import_tool.main([str(h5), str(bundle)]) == 2  # exists: refused, nothing changed
  first = json.loads((bundle / 'model.json').read_text())['primary_digest']
  other = _pixel_h5(tmp_path / 'other.h5')
  assert keras_import_tool.main([str(other), str(bundle), '--overwrite']) == 0
  spec, _, _ = checkpoints.load_model_bundle(bundle)
  assert spec.primary_digest != first and spec.source == str(other)
  assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('.')) == []
  assert keras_import_tool.main([str(h5), str(tmp_path / 'm.h5' / 'x')]) == 2  # parent is a file


def _bundle(tmp_path, heads=('a',)):
  h5 = _pixel_h5(tmp_path / 'b.h5', heads)
  assert keras_import_tool.main([str(h5), str(tmp_path / 'bundle')]) == 0
  return tmp_path / 'bundle'


@pytest.mark.parametrize('key, value, message', [
    ('head_names', 'abcd', 'head_names'),
    ('head_names', ['a', 'a'], 'head_names'),
    ('primary_digest', '', 'primary_digest'),
    ('image_size', '16', 'image_size'),
    ('input_kind', 'rgb', 'input_kind'),
    ('thresholds', {'fake': 'high'}, 'thresholds'),
    ('thresholds', {'fake': 1.5}, 'thresholds'),
    ('best_epochs', 3, 'best_epochs'),
    # Was: a per-head list of the wrong length loaded and crashed later, in attribute.
    ('thresholds', {'fake': 0.5, 'heads': [0.5, 0.5]}, 'one threshold per head'),
    ('variables_digest', 'abc', 'variables_digest'),
    ('side_files', {'../x': '0' * 64}, 'side_files'),
])
def test_hand_edited_model_json_is_refused_naming_the_key(tmp_path, key, value, message):
  bundle = _bundle(tmp_path)
  record = json.loads((bundle / 'model.json').read_text())
  record[key] = value
  (bundle / 'model.json').write_text(json.dumps(record))
  with pytest.raises(ValueError, match=message):
    checkpoints.load_model_bundle(bundle)


def test_bundle_with_wrong_shapes_or_non_finite_values_is_refused(tmp_path):
  bundle = _bundle(tmp_path)
  spec, variables, _ = checkpoints.load_model_bundle(bundle)
  # Two heads' weights under a one-head model.json: shapes checked against the modules.
  (tmp_path / 'two').mkdir()
  two = checkpoints.load_model_bundle(_bundle(tmp_path / 'two', heads=('a1', 'a2')))[1]
  import orbax.checkpoint as ocp
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(bundle / 'variables', {'primary': variables['primary'],
                                             'heads': two['heads']}, force=True)
  with pytest.raises(ValueError, match=r"heads.*file \(2,"):
    checkpoints.load_model_bundle(bundle)
  # NaN statistics are refused on export and on load (the digest would not catch them).
  variables['primary']['batch_stats']['bn_02']['var'][0] = np.nan
  with pytest.raises(ValueError, match='NaN'):
    checkpoints.save_model_bundle(tmp_path / 'nan', spec, variables)
  with pytest.raises(ValueError, match='NaN'):
    checkpoints.check_finite(variables, 'x')
  # DCT statistics with NaN or junk are refused by name.
  stats = tmp_path / 'stats'
  spectral.DctStats(mean=np.zeros((16, 16)), std=np.ones((16, 16)), count=1).save(stats)
  np.save(stats / 'mean.npy', np.full((16, 16), np.nan))
  with pytest.raises(ValueError, match='NaN'):
    spectral.load_dct_stats(stats)
  (stats / 'mean.npy').write_bytes(b'junk')
  with pytest.raises(ValueError, match='mean.npy'):
    spectral.load_dct_stats(stats)


def _rewrite_variables(bundle, variables, digests=True):
  """Stores `variables` in the bundle; with `digests`, model.json's digests are made to match
  (what a crafted bundle would do), so only the other checks stand."""
  import orbax.checkpoint as ocp
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(bundle / 'variables', variables, force=True)
  if digests:
    record = json.loads((bundle / 'model.json').read_text())
    record['primary_digest'] = checkpoints.tree_digest(variables['primary'])
    record['variables_digest'] = checkpoints.tree_digest(variables)
    for k, head in enumerate(record['head_provenance']):
      head['digest'] = checkpoints.head_digest(variables['heads'], k)
    (bundle / 'model.json').write_text(json.dumps(record))


def test_every_weight_and_side_file_is_digest_checked_on_load(tmp_path):
  """Was: only the primary's weights were checked; a flipped bit in a head (of a bundle without
  head digests) or in the kNN bank loaded and changed scores."""
  bundle = _bundle(tmp_path)
  spec, variables, _ = checkpoints.load_model_bundle(bundle)
  assert spec.variables_digest == checkpoints.tree_digest(variables) and spec.side_files == {}
  # A kNN bank, as the open-set fit writes it: its digest recorded with it.
  np.save(bundle / openset.KNN_BANK_FILE, np.eye(4, dtype=np.float32))
  checkpoints.update_model_spec(bundle, rewritten=(openset.KNN_BANK_FILE,))
  spec, _, _ = checkpoints.load_model_bundle(bundle)
  assert set(spec.side_files) == {openset.KNN_BANK_FILE}
  data = bytearray((bundle / openset.KNN_BANK_FILE).read_bytes())
  data[-1] ^= 1  # one bit of one feature
  (bundle / openset.KNN_BANK_FILE).write_bytes(bytes(data))
  with pytest.raises(ValueError, match=f'{openset.KNN_BANK_FILE} does not match its digest'):
    checkpoints.load_model_bundle(bundle)
  with pytest.raises(ValueError, match='does not match its digest'):  # nor is it blessed
    checkpoints.update_model_spec(bundle, source='x')
  (bundle / openset.KNN_BANK_FILE).unlink()
  with pytest.raises(ValueError, match=f'{openset.KNN_BANK_FILE} is missing'):
    checkpoints.load_model_bundle(bundle)
  np.save(bundle / openset.KNN_BANK_FILE, np.eye(4, dtype=np.float32))
  # A head's weight changed in a bundle written before heads carried digests: the whole tree's
  # digest still refuses it.
  record = json.loads((bundle / 'model.json').read_text())
  record['head_provenance'] = []
  (bundle / 'model.json').write_text(json.dumps(record))
  checkpoints.load_model_bundle(bundle)
  variables['heads']['params']['heads']['decision']['dense']['bias'] = (
      variables['heads']['params']['heads']['decision']['dense']['bias'] + 1e-6)
  _rewrite_variables(bundle, variables, digests=False)
  with pytest.raises(ValueError, match=r'weights do not match their digest.*variables_digest'):
    checkpoints.load_model_bundle(bundle)


def test_negative_batch_norm_variances_are_refused_in_bundles_and_imports(tmp_path):
  """Was: an .h5 (or a bundle) with negative BatchNorm variances was accepted."""
  layers = ref.random_layers(RNG, ref.layer_shapes(3, True, 16, ()))
  layers['dBNorm_03']['moving_variance'][0] = -0.5
  ref.write_h5(tmp_path / 'negative.h5', layers, (16, 16, 3))
  with pytest.raises(keras_import.H5ImportError, match=r'bn_03.*negative BatchNorm variances'):
    keras_import.import_h5(tmp_path / 'negative.h5')
  bundle = _bundle(tmp_path)
  spec, variables, _ = checkpoints.load_model_bundle(bundle)
  variables['primary']['batch_stats']['bn_02']['var'][0] = -1.0
  with pytest.raises(ValueError, match='negative BatchNorm variances'):
    checkpoints.save_model_bundle(tmp_path / 'negative', spec, variables)
  _rewrite_variables(bundle, variables)  # every digest made to match: the check itself refuses
  with pytest.raises(ValueError, match=r"bn_02.*negative BatchNorm variances \(min -1"):
    checkpoints.load_model_bundle(bundle)


def test_unreadable_records_are_clear_errors_naming_the_file(tmp_path, monkeypatch):
  """Was: a PermissionError traceback (a bundle copied with the wrong owner), or a JSON error
  from a damaged config.json."""
  from gta_jax.io import run_records
  bundle = _bundle(tmp_path)
  original = pathlib.Path.read_text

  def read_text(path, *args, **kwargs):
    if path.name in ('model.json', 'config.json'):
      raise PermissionError(13, 'Permission denied', str(path))
    return original(path, *args, **kwargs)
  monkeypatch.setattr(pathlib.Path, 'read_text', read_text)
  with pytest.raises(ValueError, match=r'model.json: cannot be read \(Permission denied\)'):
    checkpoints.load_model_bundle(bundle)
  (tmp_path / 'config.json').write_bytes(b'{"seed": 1')
  with pytest.raises(ValueError, match=r'config.json: cannot be read'):
    run_records.load_run_config(tmp_path)
  monkeypatch.undo()
  with pytest.raises(ValueError, match=r'config.json: not valid JSON .*record is damaged'):
    run_records.load_run_config(tmp_path)


def test_overwrite_replaces_only_an_imported_bundle_holding_nothing_else(tmp_path, capsys):
  h5 = _pixel_h5(tmp_path / 'm.h5')
  # A folder with an unrelated model.json, a README and a thesis: never replaced.
  thesis = tmp_path / 'thesis'
  (thesis / 'src').mkdir(parents=True)
  (thesis / 'model.json').write_text('{"layers": 3}')
  (thesis / 'README').write_text('my thesis')
  (thesis / 'src' / 'thesis.tex').write_text('chapter 1')
  assert keras_import_tool.main([str(h5), str(thesis), '--overwrite']) == 2
  err = capsys.readouterr().err
  assert 'not a gta_jax model bundle' in err
  assert (thesis / 'src' / 'thesis.tex').read_text() == 'chapter 1'
  # A real bundle with a user's notes in it: refused, naming them; the notes stay.
  bundle = tmp_path / 'bundle'
  assert keras_import_tool.main([str(h5), str(bundle)]) == 0
  (bundle / 'notes.txt').write_text('mine')
  assert keras_import_tool.main([str(h5), str(bundle), '--overwrite']) == 2
  assert 'notes.txt' in capsys.readouterr().err and (bundle / 'notes.txt').read_text() == 'mine'
  # A training run's own bundle (RUN/model), and the run itself: never replaced.
  run = tmp_path / 'run'
  assert keras_import_tool.main([str(h5), str(run / 'model')]) == 0
  (run / 'config.json').write_text('{}')
  for target in (run / 'model', run):
    assert keras_import_tool.main([str(h5), str(target), '--overwrite']) == 2
    assert 'never rewritten' in capsys.readouterr().err
  assert (run / 'config.json').read_text() == '{}'
  # A model gta-model composed is its work, not an import's: kept too.
  (bundle / 'notes.txt').unlink()
  record = json.loads((bundle / 'model.json').read_text())
  (bundle / 'model.json').write_text(json.dumps({**record, 'composed': True}))
  assert keras_import_tool.main([str(h5), str(bundle), '--overwrite']) == 2
  assert 'not imported by keras_import' in capsys.readouterr().err
  # Its own earlier import, alone in its folder: replaced, and only with --overwrite.
  (bundle / 'model.json').write_text(json.dumps(record))
  assert keras_import_tool.main([str(h5), str(bundle)]) == 2
  assert 'Pass --overwrite' in capsys.readouterr().err
  assert keras_import_tool.main([str(h5), str(bundle), '--overwrite']) == 0


def test_a_refit_bank_gets_a_new_name_before_the_old_one_goes(tmp_path):
  """The open-set fit's write order: the new bank under its own content's name, model.json
  swapped to it, then the old bank deleted; a kill between any two steps leaves model.json and
  its bank agreeing (was: one file rewritten in place, then model.json)."""
  from gta_jax.scoring import openset_fit
  bundle = _bundle(tmp_path)
  first, second = np.eye(4, dtype=np.float32), 2 * np.eye(4, dtype=np.float32)
  names = [openset_fit.bank_file_name(b) for b in (first, second)]
  assert names[0] != names[1] and names[0].startswith('open_set_knn_bank-')
  np.save(bundle / names[0], first)
  checkpoints.update_model_spec(bundle, rewritten=(names[0],))
  np.save(bundle / names[1], second)  # killed here: the old model.json and bank still agree
  assert set(checkpoints.load_model_bundle(bundle)[0].side_files) == {names[0]}
  checkpoints.update_model_spec(bundle, rewritten=(names[1],), removed=(names[0],))
  assert set(checkpoints.load_model_bundle(bundle)[0].side_files) == {names[1]}  # killed here too
  (bundle / names[0]).unlink()
  checkpoints.load_model_bundle(bundle)
