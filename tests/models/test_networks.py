import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gta_jax.models import networks

KEY = jax.random.key(0)


@pytest.mark.parametrize('module, input_shape, expected', [
    (networks.Primary(gap=True), (1, 128, 128, 3), 27_261),
    (networks.Primary(gap=False), (1, 128, 128, 1), 35_367),
    (networks.Primary(gap=True), (1, 256, 256, 3), 27_261),   # GAP: size-independent (FacesHQ+)
    (networks.Primary(gap=False), (1, 256, 256, 1), 59_943),
    (networks.SecondaryHead(gap=True), (1, 32, 32, 16), 21_345),
    (networks.SecondaryHead(gap=False), (1, 32, 32, 16), 29_505),
    (networks.SecondaryHead(gap=False), (1, 64, 64, 16), 54_081),
    (networks.StackedHeads(4, gap=True), (1, 32, 32, 16), 4 * 21_345),
    (networks.GanDctConv(1), (1, 128, 128, 3), 38_885),
    (networks.GanDctConv(5), (1, 128, 128, 3), 169_961),
    (networks.GanDctConv(1), (1, 128, 128, 1), 38_831),
    (networks.GanfpPostpool(1), (1, 128, 128, 3), 308_513),
    (networks.GanfpPostpool(5), (1, 128, 128, 3), 309_029),
    (networks.GanfpPostpool(1), (1, 128, 128, 1), 308_441),
])
def test_parameter_counts_equal_release(module, input_shape, expected):
  # eval_shape: shapes without compiling or running the initialisers.
  variables = jax.eval_shape(lambda: networks.init_variables(module, KEY, input_shape))
  assert networks.count_parameters(variables) == expected


def test_primary_split_trainable_and_statistics():
  variables = jax.eval_shape(lambda: networks.init_variables(networks.Primary(True), KEY, (1, 128, 128, 3)))
  assert networks.count_parameters(variables['params']) == 27_053
  assert networks.count_parameters(variables['batch_stats']) == 208


def test_initialisation_is_release_normal_002_with_zero_biases():
  params = jax.jit(networks.GanDctConv(1).init)(KEY, jnp.zeros((1, 64, 64, 3)))['params']
  kernels = np.concatenate([np.ravel(p['kernel']) for p in params.values()])
  biases = np.concatenate([np.ravel(p['bias']) for p in params.values()])
  assert abs(kernels.std() - 0.02) < 0.001 and abs(kernels.mean()) < 0.001
  assert not biases.any()


def test_batchnorm_uses_keras_momentum_and_epsilon():
  model = networks.Primary(True)
  variables = networks.init_variables(model, KEY, (2, 32, 32, 3))
  x = jax.random.normal(KEY, (8, 32, 32, 3)) * 3 + 1
  _, updated = model.apply(variables, x, train=True, mutable=['batch_stats'])
  # One step from mean 0: new = 0.99 * 0 + 0.01 * batch_mean.
  conv1 = jax.nn.relu(jax.lax.conv_general_dilated(
      x, variables['params']['conv_01']['kernel'], (1, 1), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + variables['params']['conv_01']['bias'])
  conv2 = jax.lax.conv_general_dilated(
      conv1, variables['params']['conv_02']['kernel'], (2, 2), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + variables['params']['conv_02']['bias']
  np.testing.assert_allclose(updated['batch_stats']['bn_02']['mean'],
                             0.01 * conv2.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-7)
  bn = networks.batch_norm()
  assert (bn.momentum, bn.epsilon) == (0.99, 1e-3)


def test_pixel_primary_takes_any_input_size():
  # eval_shape traces the whole network at each size (a size it cannot take fails to trace).
  model = networks.Primary(True)
  variables = jax.eval_shape(lambda: networks.init_variables(model, KEY, (1, 128, 128, 3)))
  for shape in [(2, 96, 160, 3), (1, 129, 131, 3), (1, 64, 64, 3)]:
    out = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct(shape, jnp.float32))
    assert out.logit.shape == (shape[0],)
    assert out.mid_features.shape[1:3] == (-(-shape[1] // 4), -(-shape[2] // 4))


def test_stacked_heads_equal_separate_heads():
  """The stacked module is K independent heads: slicing its variables gives each head exactly."""
  stacked = networks.StackedHeads(3, True)
  variables = networks.init_variables(stacked, KEY, (1, 16, 16, 16))
  leaves = jax.tree.leaves(variables)
  assert all(leaf.shape[0] == 3 for leaf in leaves)
  # Heads are initialised independently (split rngs), not as copies.
  kernel = variables['params']['heads']['conv_01']['kernel']
  assert not np.allclose(kernel[0], kernel[1])
  mid = jax.random.normal(jax.random.key(1), (4, 16, 16, 16))
  out = stacked.apply(variables, mid)
  assert out.logit.shape == (3, 4) and out.final_features.shape == (3, 4, 8, 8, 32)
  for k in range(3):
    single = jax.tree.map(lambda a: a[k], variables)
    single = {'params': single['params']['heads'], 'batch_stats': single['batch_stats']['heads']}
    np.testing.assert_allclose(networks.SecondaryHead(True).apply(single, mid).logit, out.logit[k],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('num_classes', [1, 5])
def test_baseline_output_shapes(num_classes):
  for model in (networks.GanDctConv(num_classes), networks.GanfpPostpool(num_classes)):
    # eval_shape: the shapes without compiling the initialisers (5-8 s each on 2 cores).
    variables = jax.eval_shape(model.init, KEY, jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    out = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32))
    assert out.shape == ((2,) if num_classes == 1 else (2, num_classes))


def test_predict_runs_primary_once_and_feeds_all_heads():
  primary = networks.init_variables(networks.Primary(True), KEY, (1, 64, 64, 3))
  heads = networks.init_variables(networks.StackedHeads(2, True), KEY, (1, 16, 16, 16))
  x = jax.random.normal(KEY, (3, 64, 64, 3))
  out = jax.jit(networks.predict, static_argnames=('input_kind', 'num_heads'))(
      {'primary': primary, 'heads': heads}, x, input_kind='pixel', num_heads=2)
  direct = networks.Primary(True).apply(primary, x)
  np.testing.assert_allclose(out.primary.logit, direct.logit, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.heads.logit, networks.StackedHeads(2, True).apply(
      heads, direct.mid_features).logit, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('gap', [True, False])
@pytest.mark.parametrize('formulation', ['grouped', 'unrolled'])
def test_heads_formulations_match_the_vmap_definition(gap, formulation):
  """Same variables -> same outputs, batch statistics and gradients as nn.vmap(SecondaryHead)."""
  reference = networks.StackedHeads(3, gap, 0.9, 'vmap')
  other = networks.StackedHeads(3, gap, 0.9, formulation)
  variables = reference.init(KEY, jnp.zeros((1, 8, 8, 16)))
  assert jax.tree.map(jnp.shape, other.init(KEY, jnp.zeros((1, 8, 8, 16)))) == \
      jax.tree.map(jnp.shape, variables)
  variables = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(KEY, a.shape), variables)
  mid = jax.random.normal(jax.random.key(2), (4, 8, 8, 16))

  def run(module, params):
    out, updates = module.apply({'params': params, 'batch_stats': variables['batch_stats']}, mid,
                                train=True, mutable=['batch_stats'])
    return (out.logit ** 2).sum(), (out, updates)

  (_, (out_r, upd_r)), grad_r = jax.value_and_grad(
      lambda p: run(reference, p), has_aux=True)(variables['params'])
  (_, (out_o, upd_o)), grad_o = jax.value_and_grad(
      lambda p: run(other, p), has_aux=True)(variables['params'])
  np.testing.assert_allclose(out_o.logit, out_r.logit, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out_o.final_features, out_r.final_features, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), upd_o, upd_r)
  # Gradients agree to float precision relative to each leaf's scale; conv biases feeding
  # BatchNorm have a true gradient of 0, so only noise remains there: relative to the largest
  # gradient of all.
  scale = max(float(jnp.abs(b).max()) for b in jax.tree.leaves(grad_r))
  jax.tree_util.tree_map_with_path(lambda path, a, b: np.testing.assert_allclose(
      a, b, atol=1e-5 * max(1.0, scale if 'conv' in jax.tree_util.keystr(path) and
                            'bias' in jax.tree_util.keystr(path) else float(jnp.abs(b).max()))),
      grad_o, grad_r)
  inference = other.apply(variables, mid).logit
  np.testing.assert_allclose(inference, reference.apply(variables, mid).logit, rtol=1e-5, atol=1e-5)


def test_recalibrated_batch_norm_makes_inference_match_training_on_that_batch():
  """Statistics recalibrated on one batch are that batch's: inference then normalises exactly as
  the training forward did. Stacked heads: only active heads change."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from gta_jax.families import base
  from gta_jax.models import networks
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(8, 32, 32, 3)), jnp.float32)
  model = networks.Primary(bn_momentum=0.9)
  variables = networks.init_variables(model, jax.random.key(0), (1, 32, 32, 3))
  trained = model.apply(variables, x, train=True, mutable=['batch_stats'])[0].logit
  before = model.apply(variables, x).logit
  step = jax.jit(lambda v, c, b: model.clone(bn_momentum=0.0).apply(
      v, b, train=True, mutable=['batch_stats'])[1]['batch_stats'])
  stats = base.recalibrate_batch_norm(step, variables, None, [x])
  after = model.apply({'params': variables['params'], 'batch_stats': stats}, x).logit
  np.testing.assert_allclose(after, trained, rtol=1e-4, atol=1e-5)
  assert not np.allclose(before, trained, atol=1e-3)
  # Two batches: the equal average of their statistics.
  y = x[:, ::-1] * 2 + 1
  both = base.recalibrate_batch_norm(step, variables, None, [x, y])
  one = base.recalibrate_batch_norm(step, variables, None, [y])
  np.testing.assert_allclose(both['bn_02']['mean'],
                             (stats['bn_02']['mean'] + one['bn_02']['mean']) / 2, rtol=1e-5)

  heads = networks.StackedHeads(2, bn_momentum=0.9)
  mid = jnp.asarray(rng.normal(size=(8, 8, 8, 16)), jnp.float32)
  head_vars = networks.init_variables(heads, jax.random.key(1), (1, 8, 8, 16))
  head_step = jax.jit(lambda v, c, b: heads.clone(bn_momentum=0.0).apply(
      v, b, train=True, mutable=['batch_stats'])[1]['batch_stats'])
  new = base.recalibrate_batch_norm(head_step, head_vars, None, [mid],
                                    active=jnp.array([True, False]))
  for old_leaf, new_leaf in zip(jax.tree.leaves(head_vars['batch_stats']), jax.tree.leaves(new)):
    np.testing.assert_array_equal(new_leaf[1], old_leaf[1])
    assert not np.allclose(new_leaf[0], old_leaf[0])
