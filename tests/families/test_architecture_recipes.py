"""The heads' architecture recipes: the supervised contrastive loss against an independent
transcription, patch windows, and a heads run with both that exports the paper's heads."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import recipe_config
from conftest import ROOT
from gta_jax import chains
from gta_jax import evaluation
from gta_jax import train
from gta_jax.families import losses
from gta_jax.families import proposed
from gta_jax.io import checkpoints
from gta_jax.scoring import openset as openset_scores
from gta_jax.scoring import openset_fit


def supcon_by_the_formula(views: np.ndarray, labels: np.ndarray, temperature: float) -> float:
  """Khosla et al. 2020, eq. 2 (L_out), written anchor by anchor: views [B, V, D] L2-normalised
  (SupContrast's layout), labels [B]. Every view is an anchor (contrast_mode='all'); its
  denominator runs over every other view, never itself; an anchor without positives adds 0 to
  the mean (SupContrast's mask_pos_pairs rule); SupContrast scales by T / base_T (base 0.07)."""
  b, v, _ = views.shape
  flat = np.concatenate([views[:, j] for j in range(v)])  # torch.cat(torch.unbind(f, 1)): view-major
  flat_labels = np.tile(labels, v)
  total = 0.0
  for i in range(len(flat)):
    others = [a for a in range(len(flat)) if a != i]
    denominator = sum(np.exp(flat[i] @ flat[a] / temperature) for a in others)
    positives = [p for p in others if flat_labels[p] == flat_labels[i]]
    if positives:
      total += -np.mean([np.log(np.exp(flat[i] @ flat[p] / temperature) / denominator)
                         for p in positives])
  return temperature / 0.07 * total / len(flat)


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize('temperature', [0.07, 0.5])
def test_supervised_contrastive_matches_the_formula_with_views_and_lone_labels(temperature):
  rng = np.random.default_rng(0)
  views = _unit(rng.normal(size=(6, 2, 8))).astype(np.float64)
  labels = np.array([0, 1, 0, 2, 1, 3])  # label 3 has one image: its two views are positives
  flat = np.concatenate([views[:, 0], views[:, 1]])
  got = losses.supervised_contrastive(jnp.asarray(flat, jnp.float32),
                                      jnp.asarray(np.tile(labels, 2)), jnp.ones(12), temperature)
  assert float(got) == pytest.approx(supcon_by_the_formula(views, labels, temperature), abs=1e-5)
  # One view each and a label seen once: that anchor has no positive and adds 0 to the mean.
  single = views[:, :1]
  got = losses.supervised_contrastive(jnp.asarray(single[:, 0], jnp.float32), jnp.asarray(labels),
                                      jnp.ones(6), temperature)
  assert float(got) == pytest.approx(supcon_by_the_formula(single, labels, temperature), abs=1e-5)


def test_supervised_contrastive_ignores_padding_views_entirely():
  rng = np.random.default_rng(1)
  views = _unit(rng.normal(size=(5, 8))).astype(np.float32)
  labels = np.array([0, 1, 0, 1, 0])
  padded = np.concatenate([views, _unit(rng.normal(size=(3, 8))).astype(np.float32)])
  got = losses.supervised_contrastive(jnp.asarray(padded), jnp.asarray(np.r_[labels, 0, 1, 0]),
                                      jnp.asarray(np.r_[np.ones(5), np.zeros(3)]))
  want = supcon_by_the_formula(views[:, None].astype(np.float64), labels, 0.07)
  assert float(got) == pytest.approx(want, abs=1e-5)
  # Views that agree with their labels cost less than views that do not.
  aligned = np.stack([np.eye(8)[label] for label in labels]).astype(np.float32)
  assert float(losses.supervised_contrastive(jnp.asarray(aligned), jnp.asarray(labels),
                                             jnp.ones(5))) < float(got)


def test_patch_windows_are_even_offset_slices_of_each_image():
  features = jnp.arange(2 * 8 * 8 * 3, dtype=jnp.float32).reshape(2, 8, 8, 3)
  windows = proposed.random_patches(features, jax.random.key(0), 5, 4)
  assert windows.shape == (10, 4, 4, 3)
  for n in range(10):
    image = np.asarray(features[n // 5])
    matches = [(t, l) for t in range(0, 5, 2) for l in range(0, 5, 2)
               if np.array_equal(image[t:t + 4, l:l + 4], np.asarray(windows[n]))]
    assert matches, n  # window n is a slice of its own image, at even offsets


def test_patch_and_contrastive_heads_train_and_export_the_papers_heads(
    smoke_data_dir, smoke_primary, tmp_path):
  from gta_jax.tools import attribute
  config = recipe_config(smoke_data_dir, smoke_primary, 'contrastive')
  assert config.recipe.patches > 0 and config.recipe.contrastive
  workdir = tmp_path / 'recipe'
  results = train.train_and_evaluate(config, workdir)
  assert set(results['clean']['heads']) == set(config.sources)
  spec, variables, _ = checkpoints.load_model_bundle(workdir / 'model')  # checks the layout
  assert 'projection' not in variables['heads']['params']
  assert 'loss_weights' not in variables['heads']['params']
  examples = tmp_path / 'images'
  chains.write_examples(config, examples)
  assert attribute.main(['--model', str(workdir), str(examples)]) == 0
  recorded = json.loads((workdir / 'config.json').read_text())['recipe']
  assert recorded['patches'] == config.recipe.patches and recorded['contrastive'] is True


def test_heads_trained_on_several_seeds_are_cross_tested_and_calibrated_on_their_own_data(
    smoke_data_dir, smoke_primary, tmp_path):
  """The config trains on `smoke_multiseed` (3 seeds per architecture) unless `one_seed`; its
  crosstest reads the variant splits of `smoke_variants`, while the open-set fit (kNN bank) keeps
  reading the run's own training images, not the variants config's one-seed fakes."""
  assert chains.load_config_file(str(ROOT / 'configs' / 'architecture_attribution.py'),
                                 'paper,one_seed,smoke').data.config == 'smoke'
  config = recipe_config(smoke_data_dir, smoke_primary, 'paper')
  assert config.data.config == 'smoke_multiseed'
  workdir = tmp_path / 'multiseed'
  train.train_and_evaluate(config, workdir)
  cross = evaluation.crosstest_run(workdir)
  assert cross['test_unseen_seeds']['count'] > 0 and 'test_wider' in cross
  run = openset_fit.HeadsRun.open(workdir, variants=True)
  assert run.trained_on.builder.builder_config.name == 'smoke_multiseed'
  assert run.dataset.builder.builder_config.name == 'smoke_variants'
  _, features, sources = run.outputs('train')
  spec = checkpoints.load_model_bundle(workdir / 'model')[0]
  stored, _ = openset_scores.load_knn(workdir / 'model', spec)
  refit = openset_scores.NearestNeighbours.fit(features, sources, run.head_ids)
  np.testing.assert_allclose(refit.bank, stored.bank, rtol=1e-5, atol=1e-6)
  one_seed = openset_fit.HeadsRun(workdir, run.spec, run.variables, run.dataset, run.head_ids,
                              run.batch_size, trained_on=run.dataset)
  _, other_features, _ = one_seed.outputs('train')  # the variants config's one-seed fakes
  assert not np.allclose(other_features, features)


def test_recipe_settings_are_checked_by_name(smoke_data_dir, smoke_primary, tmp_path):
  from gta_jax import errors
  for key, value, message in (('recipe.patch_size', 12, 'recipe.patch_size'),
                              ('recipe.contrastive_weighting', 'sum', 'learned or fixed'),
                              ('recipe.patches', -1, 'recipe.patches')):
    config = recipe_config(smoke_data_dir, smoke_primary, 'contrastive', **{key: value})
    with pytest.raises(errors.ConfigError, match=message):
      train.train_and_evaluate(config, tmp_path / key)


def test_automatic_weighting_is_dna_dets_formula_and_learns_to_scale_a_loss_down():
  task_losses, weights = jnp.array([[2.0, 0.5]]), jnp.array([[1.0, 2.0]])
  want = 0.5 / 1 * 2.0 + np.log(2.0) + 0.5 / 4 * 0.5 + np.log(5.0)
  assert float(losses.automatically_weighted(task_losses, weights)[0]) == pytest.approx(want)
  # Its gradient in w_i vanishes at w_i^2 = L_i / 4 + sqrt(L_i^2 / 16 + L_i / 2): a larger loss
  # earns a larger w_i, i.e. a smaller effective weight 0.5 / w_i^2.
  grad = jax.grad(lambda w: losses.automatically_weighted(jnp.array([4.0, 0.25]), w))
  best = np.sqrt([L / 4 + np.sqrt(L ** 2 / 16 + L / 2) for L in (4.0, 0.25)])
  np.testing.assert_allclose(grad(jnp.asarray(best, jnp.float32)), 0, atol=1e-5)


@pytest.mark.slow
def test_dnadet_baseline_trains_on_crops_and_is_cross_tested_by_its_argmax(
    smoke_data_dir, tmp_path):
  config = chains.load_config_file(str(ROOT / 'configs' / 'baseline_dnadet.py'), 'smoke')
  with config.unlocked():
    config.data.data_dir = smoke_data_dir
  workdir = tmp_path / 'dnadet'
  results = train.train_and_evaluate(config, workdir)
  assert 0 <= results['clean']['multiclass']['accuracy'] <= 1
  spec, variables, _ = checkpoints.load_model_bundle(workdir / 'model')
  assert spec.arch == 'dnadet' and spec.task == 'multiclass'
  assert 'loss_weights' not in variables['primary']['params']
  cross = evaluation.crosstest_run(workdir)
  ids = {'tconv': 1, 'nearest': 2, 'bilinear': 3, 'pixelshuffle': 4}
  for split in ('test_unseen_seeds', 'test_wider'):
    matrix, classes = np.array(cross[split]['confusion_matrix']), cross[split]['classes']
    for name, recall in cross[split]['recall'].items():  # a softmax model claims by its argmax
      row = matrix[classes.index(ids[name])]
      assert recall == pytest.approx(row[classes.index(ids[name])] / row.sum())
    assert cross[split]['unclaimed'] == pytest.approx(matrix[:, classes.index(0)].sum()
                                                      / matrix.sum())


def test_ablation_benchmark_reports_mean_and_spread_over_seeds(smoke_data_dir, smoke_primary,
                                                                tmp_path, capsys):
  import architecture_ablation  # benchmarks/, on the path through conftest
  out = tmp_path / 'ablation.json'
  assert architecture_ablation.main([
      '--primary', str(smoke_primary), '--workdir', str(tmp_path / 'runs'), '--recipes', 'paper',
      '--seeds', '0,1', '--data-dir', smoke_data_dir, '--json', str(out), '--smoke']) == 0
  record = json.loads(out.read_text())
  assert record['data'] == 'smoke_multiseed' and record['training_seeds_per_architecture'] == 3
  assert json.loads((tmp_path / 'runs' / 'paper' / 'seed_0' / 'config.json').read_text())[
      'data']['config'] == 'smoke_multiseed'
  assert architecture_ablation.training_seeds_per_architecture('multiseed5') == 5
  assert architecture_ablation.training_seeds_per_architecture('default') == 1
  per_seed = record['recipes']['paper']['per_seed']
  summary = record['recipes']['paper']['summary']
  values = [per_seed[s]['test_unseen_seeds recall'] for s in ('0', '1')]
  assert summary['test_unseen_seeds recall']['n'] == 2
  assert summary['test_unseen_seeds recall']['mean'] == pytest.approx(np.mean(values))
  assert summary['test_unseen_seeds recall']['std'] == pytest.approx(np.std(values, ddof=1))
  assert record['machine']['cpu_model']
  assert '| test_unseen_seeds recall |' in capsys.readouterr().out


def test_transformation_batches_are_drawn_from_seed_and_step_and_each_class_changes_the_image():
  from gta_jax.families import pretrain
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
  first, classes = pretrain.transformation_batch(images, seed=3, step=5)
  again, classes_again = pretrain.transformation_batch(images, seed=3, step=5)
  np.testing.assert_array_equal(first, again)
  np.testing.assert_array_equal(classes, classes_again)
  assert not np.array_equal(classes, pretrain.transformation_batch(images, 3, 6)[1])
  for index, (name, transform) in enumerate(pretrain.TRANSFORMS.items()):
    out = transform(images[0], np.random.default_rng(0))
    assert out.shape == images[0].shape and out.dtype == np.uint8, name
    assert np.array_equal(out, images[0]) == (name == 'none'), name


def test_pretraining_learns_the_transformations_and_hands_phase_three_fresh_decisions(
    smoke_data_dir, smoke_primary):
  from gta_jax.families import pretrain
  config = recipe_config(smoke_data_dir, smoke_primary, 'contrastive',
                         **{'recipe.pretrain_steps': 1})
  _, family = evaluation.setup(config)
  images = pretrain.real_training_images(family.dataset)
  fresh = family.heads_model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 16)), train=False)
  pretrained, history = pretrain.pretrained_heads(
      fresh, jax.random.key(1), images=images, steps=600, batch_size=32, learning_rate=3e-3,
      seed=0, constants=family.constants(), primary_model=family.primary_model,
      heads_model=family.heads_model, input_kind='pixel')
  # each step draws new transformations, so the last steps' accuracy is on unseen draws
  assert history[-1]['accuracy'] > 2.5 / len(pretrain.TRANSFORMS)  # chance: 1 / 10
  assert history[-1]['loss'] < min(h['loss'] for h in history[:2]) - 0.2
  assert history[-1]['loss'] < np.log(len(pretrain.TRANSFORMS)) - 0.4
  heads, initial = pretrained['params']['heads'], fresh['params']['heads']
  np.testing.assert_array_equal(heads['decision']['dense']['kernel'],
                                initial['decision']['dense']['kernel'])
  assert not np.allclose(heads['conv_01']['kernel'], initial['conv_01']['kernel'])

  # the whole recipe (pre-training, then phase III) runs in tests/test_frequency_inputs.py
