"""Composed models: heads of separate runs on one primary (the paper's semi-decentralised design).

Enrolling or removing a head must leave every other head's scores, maps, pooled features and every
verdict that does not involve it bit for bit as they were (same machine), for pixel and DCT
models; heads of another primary, or of another kind of model, are refused; each head keeps its
threshold, calibrations and provenance."""
import json
import pathlib

import jax
import numpy as np
from PIL import Image
import pytest

from gta_jax import errors
from gta_jax.io import checkpoints
from gta_jax.io import composition
from gta_jax.models import networks
from gta_jax.models import spectral
from gta_jax.scoring import inference
from gta_jax.scoring import openset

SIZE = 32
RNG = np.random.default_rng(7)


def _variables(kind: str, seed: int, num_heads: int, primary=None) -> dict:
  gap = networks.uses_gap(kind)
  channels = 1 if kind == 'dct' else 3
  key = jax.random.key(seed)
  variables = {'primary': primary if primary is not None else networks.init_variables(
      networks.Primary(gap), key, (1, SIZE, SIZE, channels))}
  if num_heads:
    heads = networks.init_variables(networks.StackedHeads(num_heads, gap), jax.random.fold_in(key, 1),
                                    (1, SIZE // 4, SIZE // 4, 16))
    # Moving statistics away from (0, 1), so that each head's BatchNorm matters.
    heads['batch_stats'] = jax.tree.map(
        lambda a: np.asarray(a) * RNG.uniform(0.5, 1.5, a.shape).astype(np.float32),
        heads['batch_stats'])
    variables['heads'] = heads
  return jax.tree.map(np.asarray, variables)


def _save(directory, kind, variables, names, thresholds=0.5, open_set=None, dct_stats=None):
  spec = checkpoints.ModelSpec(input_kind=kind, image_size=SIZE, head_names=tuple(names),
                               source=str(directory), task='attribution' if names else 'detection',
                               thresholds={'fake': 0.5, 'heads': thresholds},
                               open_set=open_set or {})
  return checkpoints.save_model_bundle(directory, spec, variables, dct_stats)


def _images(directory, count=10):
  directory.mkdir(parents=True, exist_ok=True)
  for i in range(count):
    Image.fromarray(RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(directory / f'{i}.png')
  return sorted(directory.glob('*.png'))


def _features(bundle, paths, dct_stats_dir=None):
  model = inference.load_model(bundle, dct_stats_dir)
  x = np.stack([inference.prepare_input(model, np.asarray(Image.open(p)))[0] for p in paths])
  return np.asarray(inference.score_batch(
      model.variables, x, input_kind=model.spec.input_kind, num_heads=len(model.spec.head_names),
      with_saliency=False, with_features=True)[3])


def _add_knn(bundle, features, rows):
  """A kNN calibration that accepts exactly the images `rows` (their own features, k = 1)."""
  np.save(bundle / openset.KNN_BANK_FILE, openset._unit(features[rows]).astype(np.float32))
  spec = json.loads((bundle / 'model.json').read_text())
  k = len(spec['head_names'])
  checkpoints.update_model_spec(bundle, open_set={
      'tpr95': [0.55] * k, 'doc': [0.6] * k, 'split': 'validation', 'mode': 'clean',
      'knn': {'k': 1, 'threshold': -1e-3, 'acceptance': 0.99, 'operating_points': {},
              'bank': openset.KNN_BANK_FILE, 'images': len(rows)}},
      rewritten=(openset.KNN_BANK_FILE,))


@pytest.fixture(scope='module', params=['pixel', 'dct'])
def runs(request, tmp_path_factory):
  """A primary P and two heads runs on it (A: heads a1, a2; B: head b), each bundle with its own
  open-set calibration, a heads run X on another primary, and images to score."""
  kind = request.param
  root = tmp_path_factory.mktemp(f'composition_{kind}')
  stats, stats_dir = None, None
  if kind == 'dct':
    stats = (RNG.normal(0, 1, (SIZE, SIZE)).astype(np.float32),
             RNG.uniform(2, 4, (SIZE, SIZE)).astype(np.float32))
    stats_dir = root / 'stats'
    spectral.DctStats(mean=stats[0], std=stats[1], count=1).save(stats_dir)
  primary = _variables(kind, 0, 0)['primary']
  paths = _images(root / 'images')
  _save(root / 'P', kind, {'primary': primary}, (), dct_stats=stats)
  _save(root / 'A', kind, _variables(kind, 1, 2, primary), ('a1', 'a2'), thresholds=[0.5, 0.45],
        dct_stats=stats)
  _save(root / 'B', kind, _variables(kind, 2, 1, primary), ('b',), thresholds=0.55, dct_stats=stats)
  _add_knn(root / 'A', _features(root / 'A', paths, stats_dir), [0, 1, 2])
  _add_knn(root / 'B', _features(root / 'B', paths, stats_dir), [3, 4, 5])
  _save(root / 'X', kind, _variables(kind, 3, 1), ('x',), dct_stats=stats)
  return root, kind, paths, stats_dir


def _attribute(bundles, paths, stats_dir, open_set='off', tmp=None):
  model = inference.load_model(bundles, stats_dir)
  model.use_open_set(open_set)
  return inference.attribute(model, paths, cam_dir=tmp), model


def _compose(root, base, *others, out, renames=None):
  model = composition.compose(composition.read(root / base),
                              [composition.read(root / o) for o in others], renames)
  composition.save(model, root / out)
  return root / out


def test_enrolling_a_head_leaves_every_other_output_bit_identical(runs, tmp_path):
  root, _, paths, stats = runs
  alone_a, _ = _attribute(root / 'A', paths, stats, tmp=tmp_path / 'cams_a')
  alone_b, _ = _attribute(root / 'B', paths, stats)
  both = _compose(root, 'P', 'A', 'B', out='PAB')
  composed, model = _attribute(both, paths, stats, tmp=tmp_path / 'cams_ab')
  assert model.spec.head_names == ('a1', 'a2', 'b')
  for a, b, ab in zip(alone_a, alone_b, composed):
    assert ab['p_fake'] == a['p_fake'] == b['p_fake']
    assert {h: ab['p_heads'][h] for h in ('a1', 'a2')} == a['p_heads']  # exact, not approx
    assert ab['p_heads']['b'] == b['p_heads']['b']  # the composition gives each run's own scores
    if ab['p_heads']['b'] < 0.55:  # b does not claim it: the verdict does not involve b
      assert ab['verdict'] == a['verdict']
  assert any(ab['verdict'] != a['verdict'] for a, ab in zip(alone_a, composed)) or all(
      ab['p_heads']['b'] < 0.55 for ab in composed)
  # Each image's saliency panels: the composed model's first three are model A's.
  for path in paths:
    panels_a = np.asarray(Image.open(tmp_path / 'cams_a' / f'{path.name}_cam.png'))
    panels_ab = np.asarray(Image.open(tmp_path / 'cams_ab' / f'{path.name}_cam.png'))
    np.testing.assert_array_equal(panels_ab[:, :panels_a.shape[1]], panels_a)
  # Pooled features (the kNN score's input): A's columns unchanged, then B's.
  features_a, features_b = _features(root / 'A', paths, stats), _features(root / 'B', paths, stats)
  features_ab = _features(both, paths, stats)
  np.testing.assert_array_equal(features_ab[:, :16 + 64], features_a)
  np.testing.assert_array_equal(features_ab[:, 16 + 64:], features_b[:, 16:])


def test_removing_a_head_gives_back_the_model_without_it_bit_for_bit(runs):
  root, _, paths, stats = runs
  _compose(root, 'P', 'A', 'B', out='PAB_remove')
  removed, notes = composition.remove(composition.read(root / 'PAB_remove'), ['b'])
  assert notes == []  # b's calibration was its own run's: A's is untouched
  composition.save(removed, root / 'PAB_remove')
  again, _ = _attribute(root / 'PAB_remove', paths, stats, open_set='knn')
  alone, _ = _attribute(root / 'A', paths, stats, open_set='knn')
  assert again == alone  # scores, verdicts and kNN scores: the records are equal
  # Removing one of A's heads: the other's outputs stay; A's kNN calibration goes with it.
  one, notes = composition.remove(composition.read(root / 'A'), ['a1'])
  assert len(notes) == 1 and 'a1' in notes[0] and 'dropped' in notes[0]
  composition.save(one, root / 'A_without_a1')
  records, model = _attribute(root / 'A_without_a1', paths, stats)
  assert [r['p_heads'] for r in records] == [{'a2': r['p_heads']['a2']} for r in alone]
  assert model.available_open_set() == ['tpr95', 'doc']  # per-head thresholds stay
  assert model.thresholds.for_heads(1).tolist() == [0.45]  # a2's own threshold
  with pytest.raises(errors.UsageError, match='only while every head'):
    model.use_open_set('knn')


def test_repeated_models_score_as_their_composed_bundle(runs):
  root, _, paths, stats = runs
  in_memory, _ = _attribute([root / 'P', root / 'A', root / 'B'], paths, stats, open_set='knn')
  on_disk, _ = _attribute(_compose(root, 'P', 'A', 'B', out='PAB_disk'), paths, stats,
                          open_set='knn')
  assert in_memory == on_disk


def test_open_set_of_a_composed_model_uses_each_runs_own_calibration(runs):
  root, _, paths, stats = runs
  records, model = _attribute(_compose(root, 'P', 'A', 'B', out='PAB_open'), paths, stats,
                              open_set='auto')
  assert model.open_set == 'knn' and [g.heads for g in model.knn.groups] == [('a1', 'a2'), ('b',)]
  fitted = model.spec.open_set
  assert fitted['tpr95'] == [0.55] * 3 and 'knn' not in fitted
  for i, record in enumerate(records):
    groups = record['open_set_score']['groups']
    accepted = [g['heads'] for g in groups if g['knn'] >= g['threshold']]
    # A's bank holds images 0-2, B's 3-5: each is known to exactly its run's calibration.
    expected = [['a1', 'a2']] if i < 3 else [['b']] if i < 6 else []
    assert accepted == expected or (i >= 6 and accepted), (i, groups)
    claimers = [h for h, p in record['p_heads'].items()
                if p >= model.thresholds.for_heads(3)[list(record['p_heads']).index(h)]]
    if record['p_fake'] >= 0.5 and (not accepted or not claimers):
      assert record['verdict'] == 'unknown'
  # tpr95: the heads claim at their calibrated thresholds, whatever run they came from.
  model.use_open_set('tpr95')
  assert model.thresholds.for_heads(3).tolist() == [0.55] * 3


def test_each_head_keeps_its_threshold_provenance_and_digest(runs):
  root, _, _, _ = runs
  model = composition.read(_compose(root, 'P', 'A', 'B', out='PAB_prov'))
  assert model.spec.composed and model.spec.thresholds == {'fake': 0.5, 'heads': [0.5, 0.45, 0.55]}
  origins = [p['bundle'] for p in model.spec.head_provenance]
  assert origins == [str((root / 'A').absolute())] * 2 + [str((root / 'B').absolute())]
  a = composition.read(root / 'A')
  assert [p['digest'] for p in model.spec.head_provenance[:2]] == [
      p['digest'] for p in a.spec.head_provenance]
  # A head whose weights no longer match its digest is refused on load, by name.
  record = json.loads((root / 'PAB_prov' / 'model.json').read_text())
  record['head_provenance'][2]['digest'] = '0' * 64
  (root / 'PAB_prov' / 'model.json').write_text(json.dumps(record))
  with pytest.raises(errors.ConfigError, match="head 'b'"):
    checkpoints.load_model_bundle(root / 'PAB_prov')


def test_heads_of_another_primary_or_kind_are_refused_naming_both(runs, tmp_path):
  root, kind, _, _ = runs
  base = composition.read(root / 'A')
  other = composition.read(root / 'X')
  with pytest.raises(errors.UsageError) as error:
    composition.compose(base, [other])
  assert base.spec.primary_digest in str(error.value) and other.spec.primary_digest in str(error.value)
  with pytest.raises(errors.UsageError, match="two heads named 'a1'"):
    composition.compose(base, [composition.read(root / 'A')])
  renamed = composition.compose(base, [composition.read(root / 'A')], {'a1': 'a1_v2', 'a2': 'a2_v2'})
  assert renamed.head_names == ('a1', 'a2', 'a1_v2', 'a2_v2')
  assert renamed.spec.head_provenance[2]['name_in_run'] == 'a1'
  with pytest.raises(errors.UsageError, match='no incoming head'):
    composition.compose(base, [composition.read(root / 'B')], {'zz': 'y'})
  with pytest.raises(errors.UsageError, match='no heads'):
    composition.compose(base, [composition.read(root / 'P')])
  # Another kind of model on the same weights' digest is still refused (input kind / size).
  other_kind = 'pixel' if kind == 'dct' else 'dct'
  stats = (np.zeros((SIZE, SIZE), np.float32), np.ones((SIZE, SIZE), np.float32))
  _save(tmp_path / 'K', other_kind, _variables(other_kind, 4, 1), ('k',), dct_stats=stats)
  with pytest.raises(errors.UsageError):
    composition.compose(base, [composition.read(tmp_path / 'K')])
  if kind == 'dct':  # same primary, other DCT statistics: the heads would see other features
    changed = composition.read(root / 'B')
    changed.dct_stats = (changed.dct_stats[0] + 1, changed.dct_stats[1])
    with pytest.raises(errors.UsageError, match='DCT'):
      composition.compose(base, [changed])


def test_a_runs_own_model_is_never_a_target(tmp_path):
  run = tmp_path / 'run'
  variables = _variables('pixel', 0, 1)
  _save(run / 'model', 'pixel', variables, ('h',))
  (run / 'config.json').write_text('{}')
  assert composition.is_run_bundle(run) and composition.is_run_bundle(run / 'model')
  for target in (run, run / 'model'):
    with pytest.raises(errors.UsageError, match='never rewritten'):
      composition.check_target(target)
  copy = tmp_path / 'copy'
  _save(copy, 'pixel', variables, ('h',))
  with pytest.raises(errors.UsageError, match='not composed'):
    composition.check_target(copy)
  (tmp_path / 'file').write_text('x')
  with pytest.raises(errors.UsageError, match='not a model bundle'):
    composition.check_target(tmp_path / 'file')
  composed = composition.compose(composition.read(copy), [])
  composition.save(composed, tmp_path / 'mine')
  assert composition.check_target(tmp_path / 'mine') == tmp_path / 'mine'
  (tmp_path / 'mine' / 'notes.txt').write_text('mine')
  with pytest.raises(errors.UsageError, match='notes.txt'):
    composition.check_target(tmp_path / 'mine')
  assert pathlib.Path(tmp_path / 'mine' / 'notes.txt').read_text() == 'mine'
