"""prepare --export-folder: a prepared dataset's images into the generic folder layout, and back."""
import hashlib
import json

import pytest

from conftest import ROOT
from gta_jax.data import pipeline
from gta_jax.tools import prepare


def _export(data_dir, out_dir, config='smoke', *extra):
  return prepare.main(['--dataset', pipeline.BUILTIN, '--config', config, '--data-dir', data_dir,
                       '--export-folder', str(out_dir), *extra])


def _by_source(builder, split, keep=None) -> dict:
  """{source: sorted image digests} of one split (records are stored in a shuffled order)."""
  source = pipeline.data_source(builder, split)
  found = {}
  for index in range(len(source)):
    record = source[index]
    name = record['source'].decode()
    if keep is None or name in keep:
      found.setdefault(name, []).append(hashlib.sha256(record['image'].tobytes()).hexdigest())
  return {name: sorted(digests) for name, digests in found.items()}


def test_the_builtin_data_exports_and_prepares_back_to_the_same_splits(smoke_data_dir, tmp_path,
                                                                       capsys):
  out = tmp_path / 'exported'
  assert _export(smoke_data_dir, out, 'smoke', '--sources', 'tconv,nearest,dcgan_faces') == 0
  printed = capsys.readouterr().out
  # Every source of the main splits has 48/16/24 images: the suggested config keeps them.
  assert '--config TAG-48-16-24 --image-size 32' in printed
  assert sorted(p.name for p in (out / 'fake').iterdir()) == ['nearest', 'tconv']
  assert [p.name for p in (out / 'fake_testonly').iterdir()] == ['dcgan_faces']
  assert sorted(p.name for p in (out / 'real/real').iterdir())[:2] == ['000000.png', '000001.png']
  assert json.loads((out / 'architectures.json').read_text()) == {
      'dcgan_faces': 'dcgan_faces', 'nearest': 'nearest', 'tconv': 'tconv'}
  data_dir = tmp_path / 'tfds'
  assert prepare.main(['--dataset', 'folder', '--manual-dir', str(out), '--config', 'rt-48-16-24',
                       '--image-size', '32', '--data-dir', str(data_dir)]) == 0
  builtin = pipeline.load_builder(pipeline.BUILTIN, 'smoke', smoke_data_dir)
  folder = pipeline.load_builder('folder', 'rt-48-16-24', str(data_dir))
  for split in ('train', 'validation', 'test'):  # the same images in the same splits
    keep = {'real', 'tconv', 'nearest'}
    assert _by_source(folder, split) == _by_source(builtin, split, keep), split
  assert folder.info.splits['test_external'].num_examples == 16
  assert dict(folder.info.metadata['source_ids']) == {'real': 0, 'nearest': 1, 'tconv': 2,
                                                      'dcgan_faces': 3}


def test_all_sources_export_with_the_cross_seed_generators_named_apart(smoke_data_dir, tmp_path,
                                                                        capsys):
  out = tmp_path / 'all'
  assert _export(smoke_data_dir, out) == 0
  folders = {f'{p.parent.name}/{p.name}': len(list(p.iterdir()))
             for p in out.glob('*/*') if p.is_dir()}
  assert folders['real/real'] == 88 and folders['fake/tconv'] == 88
  assert folders['fake/tconv.cross_seed'] == 16 and folders['fake_testonly/dcgan_faces'] == 16
  assert json.loads((out / 'architectures.json').read_text())['tconv.cross_seed'] == 'tconv'
  # The cross-seed sources hold fewer images than the main ones: no split counts suggested.
  assert '--config TAG --image-size 32' in capsys.readouterr().out


@pytest.mark.parametrize('extra, message', [
    (['--sources', 'tconv,stylegan'], '--sources: stylegan not in synthetic_fingerprints/smoke'),
    (['--sources', ','], '--sources: name at least one source'),
    (['--image-size', '32'], '--image-size: only for preparing --dataset folder'),
    (['--manual-dir', '.'], '--manual-dir, --skip-corrupt and --rebuild are for preparing one'),
])
def test_export_flags_are_checked(smoke_data_dir, tmp_path, capsys, extra, message):
  assert _export(smoke_data_dir, tmp_path / 'out', 'smoke', *extra) == 2
  assert message in capsys.readouterr().err
  assert not list(tmp_path.rglob('*.png'))


def test_export_refuses_a_folder_that_is_not_empty_and_sources_without_it(tmp_path, capsys):
  (tmp_path / 'full').mkdir()
  (tmp_path / 'full' / 'keep.txt').write_text('mine')
  assert _export(str(tmp_path / 'tfds'), tmp_path / 'full') == 2
  assert 'exists and is not an empty folder' in capsys.readouterr().err
  assert prepare.main(['--dataset', 'ganfp', '--manual-dir', str(tmp_path), '--sources', 'a']) == 2
  assert '--sources: only with --export-folder' in capsys.readouterr().err


@pytest.mark.slow
def test_variant_generators_export_as_sources_of_their_own_names(smoke_data_dir, tmp_path):
  """The variants config's generators ('<architecture>.<variant>') become fake sources under
  their own names, dots included, with their architecture, and prepare as a folder dataset."""
  out = tmp_path / 'variants'
  assert _export(smoke_data_dir, out, 'smoke_variants', '--sources',
                 'tconv,tconv.unseen_seed_1,cubic') == 0
  assert json.loads((out / 'architectures.json').read_text()) == {
      'cubic': 'cubic', 'tconv': 'tconv', 'tconv.unseen_seed_1': 'tconv'}
  assert len(list((out / 'fake/tconv.unseen_seed_1').iterdir())) == 8
  assert prepare.main(['--dataset', 'folder', '--manual-dir', str(out), '--config', 'variants',
                       '--image-size', '32', '--data-dir', str(tmp_path / 'tfds')]) == 0
  folder = pipeline.load_builder('folder', 'variants', str(tmp_path / 'tfds'))
  metadata = folder.info.metadata
  assert dict(metadata['source_ids']) == {'real': 0, 'cubic': 1, 'tconv': 2,
                                          'tconv.unseen_seed_1': 3}
  assert metadata['architectures']['tconv.unseen_seed_1'] == 'tconv'
  assert dict(metadata['split_sizes']) == {'train': 5, 'validation': 1, 'test': 2}  # of 8
  variants = pipeline.load_builder(pipeline.BUILTIN, 'smoke_variants', smoke_data_dir)
  seed_1 = _by_source(variants, 'test_unseen_seeds', {'tconv.unseen_seed_1'})
  exported = []  # all 8 of the generator's images, across the folder dataset's splits
  for split in ('train', 'validation', 'test'):
    exported += _by_source(folder, split, {'tconv.unseen_seed_1'})['tconv.unseen_seed_1']
  assert sorted(exported) == seed_1['tconv.unseen_seed_1']


def test_an_unusable_data_dir_is_refused_before_any_image_is_read(tmp_path, capsys):
  """Was: an OSError from deep inside TFDS once the build started."""
  (tmp_path / 'file').write_text('')
  code = prepare.main(['--dataset', 'ganfp', '--manual-dir', str(ROOT / 'datasets/ganfp/dummy_data'),
                       '--config', '2-1-1', '--data-dir', str(tmp_path / 'file' / 'tfds')])
  assert code == 2
  err = capsys.readouterr().err
  assert f'--data-dir {tmp_path / "file" / "tfds"}: cannot create the folder' in err
