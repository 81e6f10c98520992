"""The held-out check: crops of large photos, the summary's figures, the command's exits."""
import json

import numpy as np
from PIL import Image
import pytest

from gta_jax.scoring import metrics
from gta_jax.tools import heldout
import keras_reference as ref

RNG = np.random.default_rng(3)
SIZE = 32


@pytest.fixture(scope='module')
def pixel_model(tmp_path_factory):
  path = tmp_path_factory.mktemp('model') / 'primary_ganfp.h5'
  ref.write_h5(path, ref.random_layers(RNG, ref.layer_shapes(3, True, SIZE, ())), (SIZE, SIZE, 3))
  return path


def test_large_photos_give_the_asked_crops_and_model_sized_images_are_taken_whole():
  photo = RNG.integers(0, 256, (300, 400, 3), dtype=np.uint8)
  crops = heldout.photo_crops(photo, SIZE, 5, np.random.default_rng(0))
  assert crops.shape == (5, SIZE, SIZE, 3) and crops.dtype == np.uint8
  again = heldout.photo_crops(photo, SIZE, 5, np.random.default_rng(0))
  np.testing.assert_array_equal(crops, again)  # the draw is fixed by the seed
  whole = RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
  np.testing.assert_array_equal(heldout.photo_crops(whole, SIZE, 5, np.random.default_rng(0)),
                                whole[None])
  with pytest.raises(ValueError, match='smaller than'):
    heldout.photo_crops(whole[:20], SIZE, 5, np.random.default_rng(0))


def test_crops_come_from_a_down_scaled_photo():
  """A flat photo with one 1-px line: down-scaling blurs the line, so no crop keeps a full-
  contrast 1-px line (a crop of the photo at full size would)."""
  photo = np.full((512, 512, 3), 100, np.uint8)
  photo[:, 256] = 255
  crops = heldout.photo_crops(photo, SIZE, 20, np.random.default_rng(1))
  assert crops.max() < 250


def test_summary_figures_are_the_rates_and_auc_of_the_scores():
  real = [{'path': 'a.jpg', 'p_fake': [0.1, 0.7, 0.2]}, {'path': 'b.jpg', 'p_fake': [0.4]}]
  fake = [{'path': 'f.png', 'p_fake': [0.9, 0.3]}]
  summary = heldout.summarize(real, fake, 0.5)
  assert summary['real']['false_positive_rate'] == pytest.approx(1 / 4)
  assert summary['real']['per_image_called_fake'] == {'a.jpg': 1, 'b.jpg': 0}
  assert summary['fake']['recall'] == pytest.approx(1 / 2)
  # Pairs (real, fake) ranked right: 0.9 beats all 4; 0.3 beats 0.1 and 0.2 -> 6 of 8.
  assert summary['roc_auc'] == pytest.approx(6 / 8)
  assert summary['roc_auc'] == pytest.approx(metrics.roc_auc(
      np.array([0, 0, 0, 0, 1, 1]), np.array([0.1, 0.7, 0.2, 0.4, 0.9, 0.3])))
  # Intervals over images: a.jpg has 1 of 3 crops called fake, b.jpg 0 of 1; the resampled pools
  # are (a, a) 1/3, (a, b) or (b, a) 1/4, (b, b) 0.
  interval = summary['real']['false_positive_interval']
  assert interval['level'] == 0.95
  assert (interval['low'], interval['high']) == pytest.approx((0, 1 / 3))
  assert summary['fake']['recall_interval'] is None  # one fake image: no spread to measure
  printed = heldout.format_summary(summary)
  assert 'false-positive rate 0.250 (95% interval over images 0.000-0.333)' in printed


def test_the_command_scores_folders_and_refuses_bad_arguments(tmp_path, pixel_model, capsys):
  real, fake = tmp_path / 'real', tmp_path / 'fake'
  real.mkdir()
  fake.mkdir()
  Image.fromarray(RNG.integers(0, 256, (120, 90, 3), dtype=np.uint8)).save(real / 'photo.jpg')
  Image.fromarray(RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(real / 'crop.png')
  (real / 'broken.png').write_text('not an image')
  for i in range(3):
    Image.fromarray(RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(fake / f'{i}.png')
  out = tmp_path / 'heldout.json'
  code = heldout.main(['--model', str(pixel_model), '--real', str(real), '--fake', str(fake),
                       '--crops-per-image', '4', '--json', str(out)])
  printed = capsys.readouterr().out
  assert code == 1  # one file could not be read: named, the rest scored
  assert 'broken.png' in printed and 'false-positive rate' in printed and 'ROC-AUC' in printed
  record = json.loads(out.read_text())
  assert record['summary']['real']['crops'] == 4 + 1
  assert record['summary']['fake']['crops'] == 3
  assert [r['crops'] for r in record['real']] == [1, 4]  # crop.png whole, photo.jpg 4 crops
  (real / 'broken.png').unlink()
  assert heldout.main(['--model', str(pixel_model), '--real', str(real)]) == 0
  assert heldout.main(['--model', str(pixel_model), '--real', str(tmp_path / 'nowhere')]) == 2
  assert heldout.main(['--model', str(pixel_model), '--real', str(real),
                       '--crops-per-image', '0']) == 2
  assert 'no such folder' in capsys.readouterr().err


def test_several_models_score_the_same_crops_and_are_summarised_over_models(tmp_path, pixel_model,
                                                                            capsys):
  other = tmp_path / 'other.h5'
  layers = ref.random_layers(np.random.default_rng(11), ref.layer_shapes(3, True, SIZE, ()))
  ref.write_h5(other, layers, (SIZE, SIZE, 3))
  real, fake = tmp_path / 'real', tmp_path / 'fake'
  real.mkdir()
  fake.mkdir()
  for i in range(3):
    Image.fromarray(RNG.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(real / f'{i}.jpg')
    Image.fromarray(RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(fake / f'{i}.png')
  both, alone = tmp_path / 'both.json', tmp_path / 'alone.json'
  assert heldout.main(['--model', str(pixel_model), str(other), '--real', str(real),
                       '--fake', str(fake), '--crops-per-image', '3', '--json', str(both)]) == 0
  assert heldout.main(['--model', str(other), '--real', str(real), '--fake', str(fake),
                       '--crops-per-image', '3', '--json', str(alone)]) == 0
  report, single = json.loads(both.read_text()), json.loads(alone.read_text())
  # The second model, scored beside the first, scores exactly the crops it scores alone.
  assert report['models'][1]['real'] == single['real']
  assert report['models'][1]['summary'] == single['summary']
  # Each figure over the models is the mean and sample std of theirs.
  for name, keys in heldout.OVER_MODELS:
    values = []
    for record in report['models']:
      value = record['summary']
      for key in keys:
        value = value[key]
      values.append(value)
    figure = report['over_models'][name]
    assert figure['values'] == values and figure['n'] == 2
    assert figure['mean'] == pytest.approx(np.mean(values))
    assert figure['std'] == pytest.approx(np.std(values, ddof=1))
  # The two random models rank real and fake differently, so the spread is not a trivial 0.
  assert report['over_models']['ROC-AUC']['std'] > 0
  wider = tmp_path / 'wider.h5'
  ref.write_h5(wider, ref.random_layers(np.random.default_rng(12),
                                        ref.layer_shapes(3, True, 2 * SIZE, ())),
               (2 * SIZE, 2 * SIZE, 3))
  assert heldout.main(['--model', str(pixel_model), str(wider), '--real', str(real)]) == 2
  assert 'different input sizes' in capsys.readouterr().err


def test_non_finite_scores_are_failures_not_real_verdicts(tmp_path, pixel_model, capsys,
                                                         monkeypatch):
  """Was: NaN >= threshold is False, so every NaN crop counted as real: false-positive rate
  0.000 and exit 0 from a broken model."""
  real = tmp_path / 'real'
  real.mkdir()
  for i in range(3):
    Image.fromarray(RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(real / f'{i}.png')
  original = heldout.inference.score_batch

  def broken(variables, x, **kwargs):
    p_fake, *rest = original(variables, x, **kwargs)
    return (np.full(np.shape(p_fake), np.nan), *rest)
  monkeypatch.setattr(heldout.inference, 'score_batch', broken)
  out = tmp_path / 'heldout.json'
  assert heldout.main(['--model', str(pixel_model), '--real', str(real), '--json', str(out)]) == 1
  printed = capsys.readouterr().out
  assert printed.count('non-finite score(s)') == 3 and 'rate n/a' in printed
  report = json.loads(out.read_text())
  assert report['summary']['real']['crops'] == 0
  assert report['summary']['real']['false_positive_rate'] is None
  assert len(report['failed']) == 3


def test_a_broken_link_in_the_photo_folder_is_counted_as_failed(tmp_path, pixel_model, capsys):
  """Was: skipped by the scan, so the rate covered fewer photos with exit 0."""
  real = tmp_path / 'real'
  real.mkdir()
  Image.fromarray(RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(real / 'a.png')
  (real / 'b.png').symlink_to(tmp_path / 'moved_away.png')
  assert heldout.main(['--model', str(pixel_model), '--real', str(real)]) == 1
  assert 'b.png: a broken link' in capsys.readouterr().out


def test_json_is_marked_and_replaces_only_its_own_output_unless_told(tmp_path, pixel_model,
                                                                     capsys):
  real = tmp_path / 'real'
  real.mkdir()
  Image.fromarray(RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(real / 'a.png')
  out = tmp_path / 'metrics.json'
  out.write_text('{"clean": {"detection": {"f1": 0.9}}}\n')  # a run's results, copied here
  argv = ['--model', str(pixel_model), '--real', str(real), '--json', str(out)]
  assert heldout.main(argv) == 2
  assert 'was not written by heldout' in capsys.readouterr().err
  assert json.loads(out.read_text()) == {'clean': {'detection': {'f1': 0.9}}}
  assert heldout.main(argv + ['--overwrite']) == 0
  written = json.loads(out.read_text())
  assert written['written_by'] == 'gta_jax.heldout' and written['summary']['real']['crops'] == 1
  assert heldout.main(argv) == 0
