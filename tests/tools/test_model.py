"""gta-model: enrol, remove and list heads from the command line; attribute --model repeated."""
import json

import jax
import numpy as np
from PIL import Image
import pytest

from gta_jax.io import checkpoints
from gta_jax.io import outputs
from gta_jax.models import networks
from gta_jax.tools import attribute
from gta_jax.tools import cli
from gta_jax.tools import model as model_tool

SIZE = 32


def _spread(variables, seed):
  """Initial weights give every image p = 0.5; noise on the decision layers spreads the scores."""
  rng = np.random.default_rng(seed)

  def jitter(path, a):
    if 'decision' not in jax.tree_util.keystr(path):
      return a
    return np.asarray(a) + rng.normal(0, 0.5, a.shape).astype(np.float32)
  return {**variables, 'params': jax.tree_util.tree_map_with_path(jitter, variables['params'])}


def _bundle(directory, heads=(), primary=None, seed=0, run=False, spread=False):
  key = jax.random.key(seed)
  variables = {'primary': primary if primary is not None else networks.init_variables(
      networks.Primary(True), key, (1, SIZE, SIZE, 3))}
  if heads:
    variables['heads'] = networks.init_variables(networks.StackedHeads(len(heads), True),
                                                 jax.random.fold_in(key, 1),
                                                 (1, SIZE // 4, SIZE // 4, 16))
  variables = jax.tree.map(np.asarray, variables)
  if spread:
    variables = {k: _spread(v, seed) if (k == 'heads' or primary is None) else v
                 for k, v in variables.items()}
  bundle = directory / 'model' if run else directory
  checkpoints.save_model_bundle(bundle, checkpoints.ModelSpec(
      input_kind='pixel', image_size=SIZE, head_names=tuple(heads), source=str(directory)),
      variables)
  if run:
    (directory / 'config.json').write_text(json.dumps({'name': directory.name}))
  return variables['primary']


@pytest.fixture()
def runs(tmp_path):
  primary = _bundle(tmp_path / 'phase2', run=True)
  _bundle(tmp_path / 'heads_ab', ('a', 'b'), primary, seed=1, run=True)
  _bundle(tmp_path / 'heads_new', ('newgan',), primary, seed=2, run=True)
  _bundle(tmp_path / 'other', ('x',), seed=3, run=True)
  images = tmp_path / 'images'
  images.mkdir()
  rng = np.random.default_rng(0)
  for i in range(4):
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(images / f'{i}.png')
  return tmp_path


def test_add_list_remove(runs, capsys):
  out = runs / 'models' / 'mine'
  assert model_tool.main(['add', str(runs / 'phase2'), str(runs / 'heads_ab'), '--out', str(out)]) == 0
  assert model_tool.main(['add', str(out), str(runs / 'heads_new')]) == 0  # in place: composed
  capsys.readouterr()
  assert model_tool.main(['list', str(out), '--json']) == 0
  listing = json.loads(capsys.readouterr().out)
  assert [h['name'] for h in listing['heads']] == ['a', 'b', 'newgan']
  assert [h['run'] for h in listing['heads']] == [str(runs / 'heads_ab')] * 2 + [str(runs / 'heads_new')]
  assert [h['config'] for h in listing['heads']] == ['heads_ab', 'heads_ab', 'heads_new']
  assert model_tool.main(['remove', str(out), 'b']) == 0
  assert checkpoints.load_model_bundle(out)[0].head_names == ('a', 'newgan')
  assert model_tool.main(['list', str(out)]) == 0
  assert 'newgan' in capsys.readouterr().out
  # Every head removed: a detector alone, which still scores.
  assert model_tool.main(['remove', str(out), 'a', 'newgan']) == 0
  assert attribute.main(['--model', str(out), str(runs / 'images')]) == 0


def test_refusals_exit_2_naming_the_problem(runs, capsys):
  out = runs / 'mine'
  model_tool.main(['add', str(runs / 'phase2'), str(runs / 'heads_ab'), '--out', str(out)])
  cases = {
      # a run's own model is never rewritten in place
      ('add', str(runs / 'phase2'), str(runs / 'heads_new')): 'never rewritten',
      ('add', str(out), str(runs / 'other')): 'trained on the primary',
      ('add', str(out), str(runs / 'heads_ab')): "two heads named 'a'",
      ('add', str(out), str(runs / 'heads_new'), '--rename', 'newgan'): 'OLD=NEW',
      ('remove', str(out), 'zz'): "no head named 'zz'",
      ('add', str(out), str(runs / 'nothing')): 'expected a release .h5 file, a model bundle',
      # a new model is never written into a run or bundle it is made of
      ('add', str(runs / 'phase2'), str(runs / 'heads_new'), '--out',
       str(runs / 'heads_new' / 'composed')): 'which this command reads',
      ('remove', str(out), 'a', '--out', str(out / 'smaller')): 'which this command reads',
  }
  before = (out / 'model.json').read_text()
  for argv, message in cases.items():
    capsys.readouterr()
    assert model_tool.main(list(argv)) == cli.USAGE, argv
    assert message in capsys.readouterr().err, argv
  assert (out / 'model.json').read_text() == before  # nothing was written
  assert not (runs / 'heads_new' / 'composed').exists() and not (out / 'smaller').exists()
  (runs / 'file.txt').write_text('mine')
  assert model_tool.main(['add', str(out), str(runs / 'heads_new'), '--out',
                          str(runs / 'file.txt')]) == cli.USAGE
  assert (runs / 'file.txt').read_text() == 'mine'
  assert model_tool.main(['add', str(out), str(runs / 'heads_new'), '--rename', 'newgan=a2']) == 0
  assert checkpoints.load_model_bundle(out)[0].head_names == ('a', 'b', 'a2')


def test_attribute_with_several_models_equals_the_composed_bundle(runs):
  out = runs / 'mine'
  model_tool.main(['add', str(runs / 'phase2'), str(runs / 'heads_ab'), str(runs / 'heads_new'),
                   '--out', str(out)])
  assert attribute.main(['--model', str(out), '--json', str(runs / 'one.json'),
                         str(runs / 'images')]) == 0
  assert attribute.main(['--model', str(runs / 'heads_ab'), '--model', str(runs / 'heads_new'),
                         '--json', str(runs / 'two.json'), str(runs / 'images')]) == 0
  one = outputs.load(runs / 'one.json')
  two = outputs.load(runs / 'two.json')
  assert one == two and list(one[0]['p_heads']) == ['a', 'b', 'newgan']
  assert attribute.main(['--model', str(runs / 'heads_ab'), '--model', str(runs / 'other'),
                         str(runs / 'images')]) == cli.USAGE


def _calibrate(bundle, detection, heads):
  """Stores temperatures as a run's export does (thresholds at 1%/5% FPR left out)."""
  def record(t, run):
    return None if t is None else {'temperature': t, 'fpr_thresholds': {},
                                   'fit': {'split': 'validation', 'mode': 'clean', 'run': run}}
  checkpoints.update_model_spec(bundle, calibration={
      'detection': record(detection, bundle.parent.name),
      'heads': [record(t, bundle.parent.name) for t in heads]})


def test_each_head_keeps_its_runs_calibration_and_attribute_reports_calibrated_scores(
    runs, capsys):
  primary = _bundle(runs / 'phase2', run=True, spread=True)
  _bundle(runs / 'heads_ab', ('a', 'b'), primary, seed=1, run=True, spread=True)
  _bundle(runs / 'heads_new', ('newgan',), primary, seed=2, run=True, spread=True)
  _calibrate(runs / 'phase2' / 'model', 2.0, [])
  _calibrate(runs / 'heads_ab' / 'model', 3.0, [0.5, 4.0])  # heads_new: exported before, none
  out = runs / 'mine'
  assert model_tool.main(['add', str(runs / 'phase2'), str(runs / 'heads_ab'),
                          str(runs / 'heads_new'), '--out', str(out)]) == 0
  stored = checkpoints.load_model_bundle(out)[0].calibration
  assert stored['detection']['temperature'] == 2.0  # the primary's, not the heads run's
  assert stored['detection']['fit']['run'] == 'phase2'
  assert [h and h['temperature'] for h in stored['heads']] == [0.5, 4.0, None]
  assert [h and h['fit']['run'] for h in stored['heads']] == ['heads_ab', 'heads_ab', None]
  assert model_tool.main(['remove', str(out), 'a']) == 0
  assert [h and h['temperature'] for h in
          checkpoints.load_model_bundle(out)[0].calibration['heads']] == [4.0, None]

  capsys.readouterr()
  assert attribute.main(['--model', str(out), '--json', str(runs / 'cal.json'),
                         str(runs / 'images')]) == 0
  header = capsys.readouterr().out
  assert 'calibrated by temperature scaling (detector T=2.000, b T=4.000' in header
  assert 'newgan as they are' in header and 'verdicts use the scores as they are' in header
  assert attribute.main(['--model', str(out), '--json', str(runs / 'raw.json'), '--uncalibrated',
                         str(runs / 'images')]) == 0
  assert 'calibrated by' not in capsys.readouterr().out
  calibrated, raw = (outputs.load(runs / f'{n}.json') for n in ('cal', 'raw'))

  def scaled(p, t):
    z = np.log(p) - np.log1p(-p)
    return 1 / (1 + np.exp(-z / t))

  # Scores away from 0.5, where a temperature moves them.
  assert all(abs(r['p_fake'] - 0.5) > 0.01 and abs(r['p_heads']['b'] - 0.5) > 0.01 for r in raw)
  for c, r in zip(calibrated, raw):
    assert c['verdict'] == r['verdict'] and 'uncalibrated' not in r
    assert c['uncalibrated'] == {'p_fake': r['p_fake'], 'p_heads': r['p_heads']}
    assert c['p_fake'] == pytest.approx(scaled(r['p_fake'], 2.0), rel=1e-6) != r['p_fake']
    assert c['p_heads']['b'] == pytest.approx(scaled(r['p_heads']['b'], 4.0), rel=1e-6)
    assert c['p_heads']['newgan'] == r['p_heads']['newgan']
