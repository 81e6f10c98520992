"""GANFP and FacesHQ+ builders on their committed dummy_data (release layout, tiny images)."""
import shutil

import numpy as np
import pytest

from conftest import ROOT
from gta_jax.data import builders
from gta_jax.data import pipeline
from gta_jax.tools import prepare


def _build(tmp_path, dataset, manual_dir, *extra):
  data_dir = tmp_path / 'tfds'
  code = prepare.main(['--dataset', dataset, '--manual-dir', str(manual_dir), '--config', '2-1-1',
                       '--data-dir', str(data_dir), *extra])
  return code, data_dir


def _records(builder, split):
  source = pipeline.data_source(builder, split)
  return [source[i] for i in range(len(source))]


def _text(value):
  return value.decode() if isinstance(value, bytes) else value


def test_ganfp_builds_with_release_crop_labels_and_numeric_order(tmp_path):
  code, data_dir = _build(tmp_path, 'ganfp', ROOT / 'datasets/ganfp/dummy_data')
  assert code == 0
  builder = pipeline.load_builder('ganfp', '2-1-1', str(data_dir))
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      'train': 10, 'validation': 5, 'test': 5}
  ids = dict(builder.info.metadata['source_ids'])
  assert ids == {'real': 0, 'sngan': 1, 'progan': 2, 'mmdgan': 3, 'cramergan': 4}
  for record in _records(builder, 'train'):
    assert record['image'].shape == (128, 128, 3)  # CelebA 218x178 cropped, fakes as they are
    assert record['label'] == (0 if _text(record['source']) == 'real' else 1)
  # Files 1, 2, 9, 10: numeric order puts 9 in validation and 10 in test (not '10' < '2').
  from PIL import Image
  raw = np.asarray(Image.open(ROOT / 'datasets/ganfp/dummy_data/real/real_celeba/000010.png'))
  test_real = [r for r in _records(builder, 'test') if r['source_id'] == 0]
  np.testing.assert_array_equal(test_real[0]['image'], raw[57:185, 25:153])


def test_faceshq_plus_resizes_to_256_and_keeps_the_external_source_apart(tmp_path):
  code, data_dir = _build(tmp_path, 'faceshq_plus', ROOT / 'datasets/faceshq_plus/dummy_data')
  assert code == 0
  builder = pipeline.load_builder('faceshq_plus', '2-1-1', str(data_dir))
  splits = {k: v.num_examples for k, v in builder.info.splits.items()}
  assert splits == {'train': 10, 'validation': 5, 'test': 5, 'test_external': 1}
  architectures = {_text(r['source']): _text(r['architecture']) for r in _records(builder, 'train')}
  assert architectures['stylegan_tpdne'] == architectures['stylegan_100k'] == 'stylegan'
  assert all(r['image'].shape == (256, 256, 3) for r in _records(builder, 'train'))
  external = _records(builder, 'test_external')
  assert external[0]['label'] == 1 and _text(external[0]['source']) == 'starganv2_celebahq'


def test_faceshq_plus_is_stored_as_the_release_resaved_it_jpeg_q75_unless_asked(tmp_path):
  from gta_jax.data import augment
  manual = ROOT / 'datasets/faceshq_plus/dummy_data'
  assert prepare.main(['--dataset', 'faceshq_plus', '--manual-dir', str(manual), '--config',
                       '2-1-1-png', '--data-dir', str(tmp_path / 'tfds')]) == 0
  _, data_dir = _build(tmp_path, 'faceshq_plus', manual)
  as_read = _records(pipeline.load_builder('faceshq_plus', '2-1-1-png', str(data_dir)),
                     'train')
  jpeg = _records(pipeline.load_builder('faceshq_plus', '2-1-1', str(data_dir)), 'train')
  for a, j in zip(as_read, jpeg):
    assert not np.array_equal(a['image'], j['image'])
    np.testing.assert_array_equal(j['image'], augment.jpeg(a['image'], 75))


def test_too_few_images_names_the_source_and_a_config_that_fits(tmp_path, capsys):
  code, _ = _build(tmp_path, 'ganfp', ROOT / 'datasets/ganfp/dummy_data')
  code = prepare.main(['--dataset', 'ganfp', '--manual-dir', str(ROOT / 'datasets/ganfp/dummy_data'),
                       '--config', '3-1-1', '--data-dir', str(tmp_path / 'other')])
  assert code == 2  # a usage error: the config asks for more images than there are
  err = capsys.readouterr().err
  assert 'real_celeba' in err and '4 images' in err and '--config.data.config=2-1-1' in err


@pytest.mark.parametrize('available, config, expected', [
    (4, '3-1-1', '2-1-1'), (10, '700-100-200', '7-1-2'), (5, '10-10-10', '1-1-1'),
    (3, '50-1-1', '1-1-1'), (2, '2-1-1', None)])
def test_the_suggested_split_counts_fit_the_images_there_are(available, config, expected):
  folder_dataset = builders.module('folder_dataset')
  suggestion = folder_dataset._fit(available, folder_dataset.config_from_name(
      config, folder_dataset.FolderConfig(name='default')))
  assert suggestion == expected
  if suggestion:
    assert sum(map(int, suggestion.split('-'))) <= available


@pytest.mark.parametrize('config', ['0-0-0', '5-0-1', '5-1-0-png'])
def test_split_counts_of_zero_are_refused(tmp_path, capsys, config):
  assert prepare.main(['--dataset', 'ganfp', '--manual-dir', str(ROOT / 'datasets/ganfp/dummy_data'),
                       '--config', config, '--data-dir', str(tmp_path / 'd')]) == 2
  assert 'at least one image per source' in capsys.readouterr().err
  assert not list((tmp_path / 'd').rglob('*.array_record*'))


def test_a_file_name_that_is_not_utf8_is_prepared_and_named(tmp_path, capsys):
  import os
  manual = tmp_path / 'ganfp'
  shutil.copytree(ROOT / 'datasets/ganfp/dummy_data', manual)
  folder = manual / 'fake/progan_celeba'
  first = sorted(folder.iterdir())[0]
  first.rename(folder / os.fsdecode(b'ProGAN_00000001_caf\xe9.png'))
  code, data_dir = _build(tmp_path, 'ganfp', manual)
  assert code == 0, capsys.readouterr().err
  (folder / os.fsdecode(b'ProGAN_00000001_caf\xe9.png')).write_bytes(b'broken')
  code, _ = _build(tmp_path / 'again', 'ganfp', manual)
  assert code == 1 and 'caf' in capsys.readouterr().err


def test_corrupt_files_stop_the_build_with_a_list_unless_skipped(tmp_path, capsys):
  manual = tmp_path / 'ganfp'
  shutil.copytree(ROOT / 'datasets/ganfp/dummy_data', manual)
  (manual / 'fake/progan_celeba/ProGAN_00000002.png').write_bytes(b'\x89PNG broken')
  code, _ = _build(tmp_path, 'ganfp', manual)
  assert code == 1
  assert 'ProGAN_00000002.png' in capsys.readouterr().err
  # Skipped, the file is not counted: 3 readable images cannot fill 2-1-1 (was: progan built
  # with 1 training image, without a word).
  code, _ = _build(tmp_path / 'skip', 'ganfp', manual, '--skip-corrupt')
  assert code == 2
  assert ('progan_celeba: 3 readable images (1 unreadable left out), but config \'2-1-1\' needs 4'
          in capsys.readouterr().err)


def test_skipped_files_are_replaced_by_the_next_readable_so_no_split_is_left_empty(tmp_path,
                                                                                    capsys):
  """Was: with 1-1-1 the corrupt second image was progan's only validation image, and progan had
  none."""
  manual = tmp_path / 'ganfp'
  shutil.copytree(ROOT / 'datasets/ganfp/dummy_data', manual)
  (manual / 'fake/progan_celeba/ProGAN_00000002.png').write_bytes(b'\x89PNG broken')
  data_dir = tmp_path / 'tfds'
  assert prepare.main(['--dataset', 'ganfp', '--manual-dir', str(manual), '--config', '1-1-1',
                       '--data-dir', str(data_dir), '--skip-corrupt']) == 0
  assert 'ProGAN_00000002.png' in capsys.readouterr().out  # listed as left out
  builder = pipeline.load_builder('ganfp', '1-1-1', str(data_dir))
  for split in ('train', 'validation', 'test'):
    sources = sorted(_text(r['source']) for r in _records(builder, split))
    assert sources == sorted(set(sources)) and len(sources) == 5, (split, sources)
  assert any('ProGAN_00000002.png' in s for s in builder.info.metadata['skipped_files'])
  assert builder.info.metadata['source_fingerprint']['skip_corrupt'] is True


def test_a_stale_dataset_is_refused_until_rebuilt(tmp_path, capsys):
  """Was: prepare reused the old build after the folder was fixed, still listing the old skipped
  file. Now the build records what it read (files' names, sizes, times, the skip setting)."""
  manual = tmp_path / 'ganfp'
  shutil.copytree(ROOT / 'datasets/ganfp/dummy_data', manual)
  good = (manual / 'fake/progan_celeba/ProGAN_00000002.png').read_bytes()
  (manual / 'fake/progan_celeba/ProGAN_00000002.png').write_bytes(b'\x89PNG broken')
  args = ['--dataset', 'ganfp', '--manual-dir', str(manual), '--config', '1-1-1',
          '--data-dir', str(tmp_path / 'tfds')]
  assert prepare.main(args + ['--skip-corrupt']) == 0
  assert prepare.main(args + ['--skip-corrupt']) == 0  # unchanged: nothing to do
  assert 'prepared already' in capsys.readouterr().out
  (manual / 'fake/progan_celeba/ProGAN_00000002.png').write_bytes(good)  # the user fixes it
  assert prepare.main(args + ['--skip-corrupt']) == 2
  err = capsys.readouterr().err
  assert 'has changed since (image files changed' in err and '--rebuild' in err
  assert prepare.main(args) == 2  # the skip setting differs too
  assert '--skip-corrupt was on' in capsys.readouterr().err
  assert prepare.main(args + ['--rebuild']) == 0
  assert 'unreadable' not in capsys.readouterr().out
  builder = pipeline.load_builder('ganfp', '1-1-1', str(tmp_path / 'tfds'))
  assert builder.info.metadata['skipped_files'] == []
  (manual / 'fake/progan_celeba/extra_9.png').write_bytes(good)  # an image added
  assert prepare.main(args) == 2
  assert '20 image files then, 21 now' in capsys.readouterr().err


def test_missing_folder_and_unprepared_dataset_say_what_to_do(tmp_path, capsys):
  assert prepare.main(['--dataset', 'ganfp', '--manual-dir', str(tmp_path), '--config', '2-1-1',
                       '--data-dir', str(tmp_path / 'd')]) == 2
  assert 'real_celeba' in capsys.readouterr().err
  with pytest.raises(pipeline.DatasetNotPrepared, match='gta_jax.prepare --dataset ganfp'):
    pipeline.load_builder('ganfp', 'default', str(tmp_path / 'nothing'))


@pytest.mark.slow
def test_ganfp_phase_configs_run_on_dummy_data_pixel_and_dct(tmp_path):
  """The paper's GANFP configs, shrunk by :smoke, train and evaluate end to end."""
  from gta_jax import chains
  from gta_jax import train
  from gta_jax.io import checkpoints
  code, data_dir = _build(tmp_path, 'ganfp', ROOT / 'datasets/ganfp/dummy_data')
  assert code == 0

  def config(name, **init):
    c = chains.load_config_file(str(ROOT / 'configs' / f'{name}.py'), 'smoke')
    with c.unlocked():
      c.data.data_dir = str(data_dir)
      for key, value in init.items():
        c.init[key] = value
    return c

  runs = tmp_path / 'runs'
  train.train_and_evaluate(config('phase1_ganfp'), runs / 'p1')
  results = train.train_and_evaluate(config('phase3_progan', primary=str(runs / 'p1')), runs / 'p3')
  assert set(results['clean']['heads']) == {'progan'}
  dct = train.train_and_evaluate(config('phase1_ganfp_dct'), runs / 'p1_dct')
  assert dct['clean']['detection']['count'] == 5
  spec, _, (mean, std) = checkpoints.load_model_bundle(runs / 'p1_dct' / 'model')
  assert spec.input_kind == 'dct' and mean.shape == (128, 128) and (std > 0).all()


@pytest.mark.parametrize('dataset, config, sha256', [
    ('ganfp', '2-1-1', '91fe5bb36f58ca4f84446f8bda84568e80dd25b2653890b353980b436247dd9c'),
    ('faceshq_plus', '2-1-1-png',
     '3457e1c1da4031d8352b8a09ccb406ebc8258b03704308d208de7db67f7093a1'),
])
def test_the_presets_build_the_records_they_always_did(tmp_path, dataset, config, sha256):
  """GANFP and FacesHQ+ share their code with the generic folder dataset: their builds on the
  dummy data are those of before (digest of every decoded record, recorded before the sharing;
  the JPEG build is checked against these images by the test above)."""
  from gta_jax.io import provenance
  manual_dir = ROOT / 'datasets' / dataset / 'dummy_data'
  assert prepare.main(['--dataset', dataset, '--manual-dir', str(manual_dir), '--config', config,
                       '--data-dir', str(tmp_path)]) == 0
  builder = pipeline.load_builder(dataset, config, str(tmp_path))
  assert provenance.dataset_digest(builder)['sha256'] == sha256
  assert set(builder.info.metadata) == {'source_ids', 'skipped_files', 'source_fingerprint'}


def test_a_copy_that_reset_the_times_is_up_to_date_and_a_failed_rebuild_keeps_the_old_build(
    tmp_path, capsys):
  """The review's cases: `cp -r` gives every file a new time (same bytes: still prepared); a
  broken link is an unreadable file, not a crash; a --rebuild that fails leaves the old build."""
  import os
  manual = tmp_path / 'ganfp'
  shutil.copytree(ROOT / 'datasets/ganfp/dummy_data', manual)
  args = ['--dataset', 'ganfp', '--manual-dir', str(manual), '--config', '1-1-1',
          '--data-dir', str(tmp_path / 'tfds')]
  assert prepare.main(args) == 0
  for path in manual.rglob('*.png'):
    os.utime(path, ns=(1, 1))  # what a copy without -p does to the times
  assert prepare.main(args) == 0 and 'prepared already' in capsys.readouterr().out
  (manual / 'fake/progan_celeba/ProGAN_00000000.png').symlink_to(tmp_path / 'gone.png')
  assert prepare.main(args) == 2  # changed: one more (unreadable) file
  assert '20 image files then, 21 now' in capsys.readouterr().err
  assert prepare.main(args + ['--rebuild']) == 1  # the broken link stops the build, named
  err = capsys.readouterr().err
  assert 'ProGAN_00000000.png' in err and 'left as it was' in err
  builder = pipeline.load_builder('ganfp', '1-1-1', str(tmp_path / 'tfds'))  # the old build
  assert builder.info.splits['train'].num_examples == 5
  assert [p.name for p in (tmp_path / 'tfds' / 'ganfp' / '1-1-1').iterdir()] == ['1.0.0']
  assert prepare.main(args + ['--rebuild', '--skip-corrupt']) == 0  # left out: builds
