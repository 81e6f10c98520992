"""The generic folder dataset (datasets/folder/): any generator's images from real/<name>/,
fake/<name>/ and fake_testonly/<name>/, prepared under a tag and loaded by it alone."""
import json

import numpy as np
from PIL import Image
import pytest

from conftest import ROOT
from gta_jax import chains
from gta_jax import evaluators
from gta_jax.data import augment
from gta_jax.data import builders
from gta_jax.data import loader
from gta_jax.data import pipeline
from gta_jax.io import provenance
from gta_jax.scoring import metrics
from gta_jax.scoring import verdicts
from gta_jax.tools import prepare

# Sizes (height, width): odd and non-square ones are centre-cropped and resized to --image-size.
LAYOUT = {'real/celeba': (40, 48), 'fake/newgan': (32, 32), 'fake/b_gan': (50, 36),
          'fake_testonly/zgan': (20, 20)}


def _image(shape, seed):
  """A smooth image (survives resizing recognisably), distinct per seed."""
  y, x = np.mgrid[:shape[0], :shape[1]]
  tint = np.random.default_rng(seed).integers(0, 255, 3)
  return ((np.stack([x * 3, y * 2, x + y], -1) + tint) % 256).astype(np.uint8)


def make_folder(root, layout=None, count=6, architectures=None):
  """A folder in the generic layout: `count` PNGs per source, named 1.png, 2.png, ..."""
  for index, (folder, shape) in enumerate((layout or LAYOUT).items()):
    target = root / folder
    target.mkdir(parents=True)
    for number in range(1, count + 1):
      Image.fromarray(_image(shape, index * 100 + number)).save(target / f'{number}.png')
  if architectures is not None:
    (root / 'architectures.json').write_text(json.dumps(architectures))
  return root


def _prepare(manual_dir, data_dir, config, *extra):
  return prepare.main(['--dataset', 'folder', '--manual-dir', str(manual_dir), '--config', config,
                       '--data-dir', str(data_dir), *extra])


def _records(builder, split):
  source = pipeline.data_source(builder, split)
  return [source[i] for i in range(len(source))]


def _text(value):
  return value.decode() if isinstance(value, bytes) else value


def _data_config(data_dir, config):
  from configs import common
  data = common.get_config().data
  data.name, data.config, data.data_dir = pipeline.FOLDER, config, str(data_dir)
  return data


def test_a_folder_prepares_with_its_sources_ids_architectures_and_one_image_size(tmp_path):
  manual = make_folder(tmp_path / 'newgan', architectures={'b_gan': 'bgan'})
  (manual / 'fake/.ipynb_checkpoints').mkdir()  # hidden: not a source
  assert _prepare(manual, tmp_path / 'tfds', 'newgan-4-1-1', '--image-size', '32') == 0
  builder = pipeline.load_builder('folder', 'newgan-4-1-1', str(tmp_path / 'tfds'))
  assert type(builder).__name__ == 'ReadOnlyBuilder'  # loading needs no prepare options
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      'train': 12, 'validation': 3, 'test': 3, 'test_external': 1}
  metadata = builder.info.metadata
  # Real 0; fakes 1.. in sorted-name order; the test-only source after them.
  assert dict(metadata['source_ids']) == {'real': 0, 'celeba': 0, 'b_gan': 1, 'newgan': 2,
                                          'zgan': 3}
  assert dict(metadata['architectures']) == {'celeba': 'real', 'b_gan': 'bgan',
                                             'newgan': 'newgan', 'zgan': 'zgan'}
  assert (metadata['image_size'], metadata['jpeg_quality'], metadata['tag']) == (32, 0, 'newgan')
  assert dict(metadata['split_sizes']) == {'train': 4, 'validation': 1, 'test': 1}
  records = _records(builder, 'train')
  assert all(r['image'].shape == (32, 32, 3) for r in records)
  assert {(_text(r['source']), _text(r['architecture']), int(r['label']), int(r['source_id']))
          for r in records} == {('celeba', 'real', 0, 0), ('b_gan', 'bgan', 1, 1),
                                ('newgan', 'newgan', 1, 2)}
  # 40x48 and 50x36: centre-cropped to square, resized; 32x32 is kept as is.
  folder_dataset = builders.module('folder_dataset')
  for folder, name in (('real/celeba', 'celeba'), ('fake/b_gan', 'b_gan'),
                       ('fake/newgan', 'newgan')):
    raw = np.asarray(Image.open(manual / folder / '6.png'))  # the 6th file: the test image
    test = [r for r in _records(builder, 'test') if _text(r['source']) == name]
    expected = raw if raw.shape == (32, 32, 3) else folder_dataset.centre_crop_resize(raw, 32)
    np.testing.assert_array_equal(test[0]['image'], expected)
  external = _records(builder, 'test_external')
  assert external[0]['image'].shape == (32, 32, 3)  # 20 px upscaled
  assert (int(external[0]['label']), _text(external[0]['source'])) == (1, 'zgan')

  dataset = loader.open_dataset(_data_config(tmp_path / 'tfds', 'newgan-4-1-1'), 'dct')
  assert dataset.image_size == 32 and dataset.source_id('newgan') == 2
  assert dataset.dct_stats[0].shape == (32, 32) and not dataset.group_by_content
  assert dataset.has_split('test_external') and not dataset.has_split('test_cross_seed')
  digest = provenance.dataset_digest(builder)
  assert (digest['name'], digest['config']) == ('folder', 'newgan-4-1-1')


def test_a_tag_alone_takes_the_smallest_source_70_10_20(tmp_path, capsys):
  manual = make_folder(tmp_path / 'm', {'real/a': (16, 16), 'fake/b': (16, 16)}, count=10)
  for number in range(11, 21):  # the real source has more: only the first 10 are used
    Image.fromarray(_image((16, 16), number)).save(manual / 'real/a' / f'{number}.png')
  assert _prepare(manual, tmp_path / 'tfds', 'small', '--image-size', '16') == 0
  assert 'per source 7/1/2' in capsys.readouterr().out
  builder = pipeline.load_builder('folder', 'small', str(tmp_path / 'tfds'))
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      'train': 14, 'validation': 2, 'test': 4}
  for path in list((manual / 'fake/b').iterdir())[2:]:
    path.unlink()
  assert _prepare(manual, tmp_path / 'tfds', 'tiny', '--image-size', '16') == 2
  assert f'{manual / "fake/b"}: 2 images; every source needs at least 3' in capsys.readouterr().err


def test_two_tagged_folder_datasets_coexist_in_one_data_dir(tmp_path):
  """Each is loaded by its tag alone, with its own options: 32 px as read, 16 px as JPEG 75."""
  manual = make_folder(tmp_path / 'm', count=3)
  data_dir = tmp_path / 'tfds'
  assert _prepare(manual, data_dir, 'one-1-1-1', '--image-size', '32') == 0
  assert _prepare(manual, data_dir, 'two-1-1-1', '--image-size', '16', '--jpeg-quality',
                  '75') == 0
  one = loader.open_dataset(_data_config(data_dir, 'one-1-1-1'), 'pixel')
  two = loader.open_dataset(_data_config(data_dir, 'two-1-1-1'), 'pixel')
  assert (one.image_size, two.image_size) == (32, 16)
  assert two.builder.info.metadata['jpeg_quality'] == 75
  assert builders.module('folder.folder_dataset_builder').prepared_configs(data_dir) == [
      'one-1-1-1', 'two-1-1-1']
  # JPEG: the resized image re-saved at quality 75, as FacesHQ+ does.
  folder_dataset = builders.module('folder_dataset')
  raw = np.asarray(Image.open(manual / 'fake/newgan/1.png'))
  stored = [r for r in _records(two.builder, 'train') if _text(r['source']) == 'newgan'][0]
  np.testing.assert_array_equal(stored['image'],
                                augment.jpeg(folder_dataset.centre_crop_resize(raw, 16), 75))
  with pytest.raises(pipeline.DatasetNotPrepared, match='one-1-1-1, two-1-1-1') as error:
    pipeline.load_builder('folder', 'three', str(data_dir))
  assert '--dataset folder' in str(error.value) and '--config three' in str(error.value)
  with pytest.raises(pipeline.DatasetNotPrepared, match='reserved'):
    pipeline.load_builder('folder', 'default', str(data_dir))


def test_the_same_tag_again_is_nothing_to_do_and_other_options_are_refused(tmp_path, capsys):
  manual = make_folder(tmp_path / 'm', count=3)
  assert _prepare(manual, tmp_path / 'tfds', 'a-1-1-1', '--image-size', '32') == 0
  assert _prepare(manual, tmp_path / 'tfds', 'a-1-1-1', '--image-size', '32') == 0
  assert 'nothing to do' in capsys.readouterr().out
  assert _prepare(manual, tmp_path / 'tfds', 'a-1-1-1', '--image-size', '64') == 2
  assert 'image_size 32 (now 64)' in capsys.readouterr().err
  (manual / 'fake/newgan/9.png').write_bytes((manual / 'fake/newgan/1.png').read_bytes())
  assert _prepare(manual, tmp_path / 'tfds', 'a-1-1-1', '--image-size', '32') == 2
  assert 'has changed since' in capsys.readouterr().err  # a stale build is not reused
  assert _prepare(manual, tmp_path / 'tfds', 'a-1-1-1', '--image-size', '32', '--rebuild') == 0
  builder = pipeline.load_builder('folder', 'a-1-1-1', str(tmp_path / 'tfds'))
  assert builder.info.metadata['source_fingerprint']['files'] == 4 * 3 + 1  # 4 sources


def test_corrupt_files_of_a_folder_dataset_are_listed_or_skipped(tmp_path, capsys):
  manual = make_folder(tmp_path / 'm', count=4)
  (manual / 'fake/newgan/2.png').write_bytes(b'\x89PNG broken')
  assert _prepare(manual, tmp_path / 'a', 'x-1-1-1', '--image-size', '32') == 1
  assert 'fake/newgan/2.png' in capsys.readouterr().err
  assert _prepare(manual, tmp_path / 'b', 'x-1-1-1', '--image-size', '32', '--skip-corrupt') == 0
  builder = pipeline.load_builder('folder', 'x-1-1-1', str(tmp_path / 'b'))
  assert any('2.png' in s for s in builder.info.metadata['skipped_files'])
  # Counted after the skip: newgan's next image takes the place (was: newgan had no validation
  # image, without a word).
  assert builder.info.splits['validation'].num_examples == 3
  (manual / 'fake/newgan/3.png').write_bytes(b'\x89PNG broken')  # now only 2 readable
  assert _prepare(manual, tmp_path / 'c', 'x-1-1-1', '--image-size', '32', '--skip-corrupt') == 2
  assert 'newgan: 2 readable images (2 unreadable left out)' in capsys.readouterr().err
  assert _prepare(manual, tmp_path / 'd', 'y', '--image-size', '32', '--skip-corrupt') == 2


def _break(manual, kind):
  """Makes one layout mistake in a good folder -> what the error must say."""
  if kind == 'no_real':
    (manual / 'real').rename(manual / 'reals')
    return 'real: no source folders'
  if kind == 'no_fake':
    (manual / 'fake').rename(manual / 'fakes')
    return 'fake: no source folders'
  if kind == 'empty_source':
    for path in (manual / 'fake/b_gan').iterdir():
      path.unlink()
    return 'fake/b_gan: no images'
  if kind == 'empty_test_only_source':
    (manual / 'fake_testonly/other').mkdir()
    return 'fake_testonly/other: no images'
  if kind == 'bad_name':
    (manual / 'fake/b_gan').rename(manual / 'fake/StyleGAN 2')
    return "'StyleGAN 2' is not a valid source name (lower-case letters"
  if kind == 'duplicate':
    (manual / 'fake/b_gan').rename(manual / 'fake/celeba')
    return "two sources named 'celeba'"
  if kind == 'fake_named_real':
    (manual / 'fake/b_gan').rename(manual / 'fake/real')
    return 'fake/real: "real" names the real class'
  if kind == 'loose_images':
    (manual / 'fake/newgan/1.png').rename(manual / 'fake/1.png')
    return 'outside a source folder'
  if kind == 'architectures_unknown':
    (manual / 'architectures.json').write_text('{"nogan": "x"}')
    return "architectures.json: no source folder named 'nogan'"
  assert kind == 'architectures_not_json'
  (manual / 'architectures.json').write_text('{nogan')
  return 'architectures.json: not valid JSON'


@pytest.mark.parametrize('kind', ['no_real', 'no_fake', 'empty_source', 'empty_test_only_source',
                                  'bad_name', 'duplicate', 'fake_named_real', 'loose_images',
                                  'architectures_unknown', 'architectures_not_json'])
def test_layout_mistakes_are_named_before_anything_is_written(tmp_path, capsys, kind):
  manual = make_folder(tmp_path / 'm', count=3)
  message = _break(manual, kind)
  assert _prepare(manual, tmp_path / 'tfds', 'x-1-1-1', '--image-size', '32') == 2
  err = capsys.readouterr().err
  assert message in err and str(manual) in err, err
  assert not (tmp_path / 'tfds').exists() or not list((tmp_path / 'tfds').rglob('*.array_record*'))


@pytest.mark.parametrize('args, message', [
    (['--config', 'x'], '--image-size is required'),
    (['--image-size', '32'], '--config: name this folder dataset with a tag'),
    (['--config', 'New-Gan', '--image-size', '32'], "config 'New-Gan': name it with a tag"),
    (['--config', 'x-1-0-1', '--image-size', '32'], 'at least one image per source'),
    (['--config', 'default', '--image-size', '32'], 'reserved'),
    (['--config', 'x', '--image-size', '2'], 'image size 2'),
    (['--config', 'x', '--image-size', '32', '--jpeg-quality', '101'], 'JPEG quality 101'),
    (['--config', 'x-5-1-1', '--image-size', '32'], '3 images, but config \'x-5-1-1\' needs 7 (5/1/1). Use a smaller config that fits, e.g. x-1-1-1'),
])
def test_bad_flags_are_named(tmp_path, capsys, args, message):
  manual = make_folder(tmp_path / 'm', count=3)
  code = prepare.main(['--dataset', 'folder', '--manual-dir', str(manual), '--data-dir',
                       str(tmp_path / 'tfds'), *args])
  err = capsys.readouterr().err
  assert code == 2 and message in err, err


def test_a_missing_folder_is_named(tmp_path, capsys):
  assert _prepare(tmp_path / 'nowhere', tmp_path / 'tfds', 'x', '--image-size', '32') == 2
  assert f'{tmp_path / "nowhere"}: no such folder' in capsys.readouterr().err
  assert prepare.main(['--dataset', 'ganfp', '--manual-dir', str(tmp_path), '--image-size', '32',
                       '--data-dir', str(tmp_path / 'tfds')]) == 2
  assert '--image-size: only for preparing --dataset folder' in capsys.readouterr().err


def test_the_builtin_heads_evaluators_run_on_a_folder_dataset_without_its_splits(tmp_path):
  """phase3_synthetic's evaluators (cross-seed, softened reals, external) on a folder dataset:
  the splits it lacks (test_cross_seed) are skipped, its test_external is scored."""
  manual = make_folder(tmp_path / 'm', count=3)
  assert _prepare(manual, tmp_path / 'tfds', 'x-1-1-1', '--image-size', '32') == 0
  dataset = loader.open_dataset(_data_config(tmp_path / 'tfds', 'x-1-1-1'), 'pixel')
  config = chains.load_config_file(str(ROOT / 'configs' / 'phase3_synthetic.py'), 'smoke')
  assert set(config.evals) == {'test', 'test_cross_seed', 'test_softened_reals'}

  def predict(images):  # p_fake: mean brightness; one head claiming the brighter half
    value = np.asarray(images, np.float32).mean(axis=(1, 2, 3)) / 255
    return value, (value[None] > 0.5).astype(np.float32)

  outputs = metrics.Outputs(True, ('newgan',), (dataset.source_id('newgan'),), 'claims', True,
                            any_input_size=True)
  built = evaluators.build(config.evals, predict, dataset, outputs=outputs,
                           thresholds=verdicts.Thresholds(), batch_size=4)
  results = evaluators.run_all(built)
  assert results['clean']['detection']['count'] == 3
  assert results['clean']['detection']['external_accuracy'] is not None  # fake_testonly/zgan
  assert list(results) == ['clean', 'jpeg', 'softened_real']  # no cross_seed


@pytest.mark.slow
def test_a_head_for_a_new_generator_trains_on_an_existing_primary(smoke_data_dir, smoke_primary,
                                                                   tmp_path):
  """docs/data.md's one command: phase3_synthetic with the folder dataset, its generator and a
  primary trained on the built-in data as overrides (here on the smoke primary, 32 px)."""
  from ml_collections.config_flags import config_path

  from gta_jax import train
  manual = tmp_path / 'newgan'
  assert prepare.main(['--dataset', pipeline.BUILTIN, '--config', 'smoke', '--data-dir',
                       smoke_data_dir, '--export-folder', str(manual), '--sources',
                       'tconv,dcgan_faces']) == 0
  (manual / 'fake/tconv').rename(manual / 'fake/newgan')  # a generator no config knows
  (manual / 'architectures.json').unlink()
  data_dir = tmp_path / 'tfds'
  assert _prepare(manual, data_dir, 'newgan-16-8-8', '--image-size', '32') == 0
  config = chains.load_config_file(str(ROOT / 'configs' / 'phase3_synthetic.py'), 'smoke')
  with config.unlocked():
    for key, value in {'data.name': 'folder', 'data.config': 'newgan-16-8-8',
                       'data.data_dir': str(data_dir), 'sources': ('newgan',),
                       'init.primary': str(smoke_primary), 'name': 'heads_newgan'}.items():
      config_path.set_value(key, config, value)
  results = train.train_and_evaluate(config, tmp_path / 'heads_newgan')
  assert set(results['clean']['heads']) == {'newgan'}
  assert results['clean']['detection']['count'] == 16  # 8 real + 8 newgan test images
  assert results['clean']['heads']['newgan']['external_accuracy'] is not None  # dcgan_faces
  assert 'cross_seed' not in results
  run = tmp_path / 'heads_newgan'
  assert json.loads((run / 'primary.json').read_text())['path'] == str(smoke_primary.absolute())
  assert json.loads((run / 'provenance.json').read_text())['dataset']['config'] == 'newgan-16-8-8'
  # Phase IV on the phase-III heads, the same overrides (its primary read from primary.json).
  config = chains.load_config_file(str(ROOT / 'configs' / 'phase4_synthetic.py'), 'smoke')
  with config.unlocked():
    for key, value in {'data.name': 'folder', 'data.config': 'newgan-16-8-8',
                       'data.data_dir': str(data_dir), 'sources': ('newgan',),
                       'init.from_run': str(run), 'name': 'heads_newgan_aug'}.items():
      config_path.set_value(key, config, value)
  augmented = train.train_and_evaluate(config, tmp_path / 'heads_newgan_aug')
  assert set(augmented['clean']['heads']) == {'newgan'}
  # The walkthrough's last steps (docs/enrolment.md): the built-in heads (a phase-III run on the
  # same primary) and the new generator's head composed into one model; each head scores as in
  # its own run's model, and each run's kNN calibration is kept.
  from gta_jax.scoring import inference
  from gta_jax.tools import model as model_tool
  config = chains.load_config_file(str(ROOT / 'configs' / 'phase3_synthetic.py'), 'smoke')
  with config.unlocked():
    config.data.data_dir = smoke_data_dir
    config.init.primary = str(smoke_primary)
  train.train_and_evaluate(config, tmp_path / 'heads_builtin')
  composed = tmp_path / 'models' / 'builtin_plus_newgan'
  assert model_tool.main(['add', str(smoke_primary), str(tmp_path / 'heads_builtin'), str(run),
                          '--out', str(composed)]) == 0
  images = sorted(str(p) for p in (manual / 'fake' / 'newgan').iterdir())
  both = inference.load_model(composed)
  assert both.spec.head_names == ('tconv', 'nearest', 'bilinear', 'pixelshuffle', 'newgan')
  both.use_open_set('auto')
  assert both.open_set == 'knn' and len(both.knn.groups) == 2
  records = inference.attribute(both, images)
  for source in (tmp_path / 'heads_builtin', run):
    own = inference.load_model(source)
    own.use_open_set('off')
    for record, alone in zip(records, inference.attribute(own, images)):
      assert {h: record['p_heads'][h] for h in alone['p_heads']} == alone['p_heads']
      assert record['p_fake'] == alone['p_fake']
