"""The CPU forms (the pure-XLA custom VJP 'cpu' and oneDNN's 'onednn') compute the same
function, and the same gradients, as lax.conv."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gta_jax.families import base
from gta_jax.families import losses
from gta_jax.families import proposed
from gta_jax.models import convolution
from gta_jax.models import networks
from gta_jax.models import onednn


def _form(impl):
  """'onednn' is tested wherever its wheels are installed (requirements.txt: CI); it is skipped
  only where they are absent, and a failed build then fails the test."""
  if impl == 'onednn':
    if onednn._onednn_root() is None:  # pylint: disable=protected-access
      pytest.skip('onednn-cpu-gomp / onednn-devel-cpu-gomp not installed')
    assert onednn.available(), onednn.unavailable_reason()
  return impl


FORMS = ['cpu', 'onednn']

# (batch, height, width, in, out, kernel, stride): the primary's layer kinds, plus odd sizes,
# odd batches (kernel-gradient chunks of 8 with a remainder), 1x1 and stride-2 3x3 kernels.
CASES = [
    (3, 17, 13, 3, 5, 3, 1),
    (3, 17, 13, 3, 3, 3, 1),
    (2, 13, 17, 1, 3, 3, 1),
    (2, 16, 16, 3, 8, 4, 2),
    (11, 16, 12, 16, 16, 4, 2),
    (9, 12, 12, 8, 16, 3, 1),
    (2, 15, 15, 8, 4, 4, 2),    # odd size: stride-2 input gradient falls back to autodiff
    (2, 9, 9, 2, 3, 1, 1),
    (2, 8, 8, 5, 3, 3, 2),
]


def _max_rel(a, b):
  return float(jnp.abs(a - b).max() / (jnp.abs(b).max() + 1e-12))


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('case', CASES, ids=lambda c: 'b{}_{}x{}_c{}-{}_k{}s{}'.format(*c))
def test_cpu_forms_match_lax_forward_and_gradients(case, form):
  form = _form(form)
  batch, h, w, cin, cout, k, stride = case
  kx, kk, ky = jax.random.split(jax.random.key(sum(case)), 3)
  x = jax.random.normal(kx, (batch, h, w, cin))
  kernel = jax.random.normal(kk, (k, k, cin, cout)) * 0.3
  forms = {impl: functools.partial(convolution.conv_same, stride=stride, impl=impl)
           for impl in ('lax', form)}
  outputs = {impl: jax.jit(f)(x, kernel) for impl, f in forms.items()}
  assert outputs[form].shape == (batch, -(-h // stride), -(-w // stride), cout)
  assert _max_rel(outputs[form], outputs['lax']) < 1e-5
  target = jax.random.normal(ky, outputs['lax'].shape)
  grads = {impl: jax.jit(jax.grad(lambda x, kern, f=f: jnp.sum(jnp.tanh(f(x, kern)) * target),
                                  argnums=(0, 1)))(x, kernel)
           for impl, f in forms.items()}
  for got, want in zip(grads[form], grads['lax']):
    assert got.shape == want.shape
    assert _max_rel(got, want) < 1e-5


def test_auto_picks_a_cpu_form_on_cpu_and_names_bad_choices(monkeypatch):
  if jax.default_backend() != 'cpu':
    assert convolution.resolve_impl('auto') == 'lax'
  else:
    assert convolution.resolve_impl('auto') == ('onednn' if onednn.available() else 'cpu')
    # Without oneDNN, auto falls back to the pure-XLA form and asking for it names the reason.
    monkeypatch.setattr(onednn, '_state', {'error': 'no C++ compiler (g++ or $CXX)'})
    assert convolution.resolve_impl('auto') == 'cpu'
    assert convolution.describe('auto') == ('convolutions: cpu, the pure-XLA CPU form (oneDNN '
                                            'unavailable: no C++ compiler (g++ or $CXX))')
    with pytest.raises(ValueError, match=r"'onednn' is not available here: no C\+\+ compiler"):
      convolution.resolve_impl('onednn')
  assert convolution.resolve_impl('lax') == 'lax'
  with pytest.raises(ValueError, match='auto, cpu, lax, onednn'):
    convolution.resolve_impl('fast')


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('input_kind', ['pixel', 'dct'])
def test_primary_train_step_is_the_same_under_each_form(input_kind, form):
  """The real detection step under each lowering: same loss, BatchNorm statistics and gradients.

  SGD with rate 1 makes the update the gradient itself: grads = params before - params after.
  """
  size, channels = 32, 3 if input_kind == 'pixel' else 1
  key = jax.random.key(3)
  images = np.asarray(jax.random.randint(key, (12, size, size, 3), 0, 256), np.uint8)
  batch = {'image': images, 'label': np.arange(12, dtype=np.int32) % 2, 'mask': np.ones(12, bool)}
  targets = batch['label'].astype(np.float32)
  constants = {'dct_mean': np.zeros((size, size), np.float32),
               'dct_std': np.ones((size, size), np.float32)}
  optimizer = optax.sgd(1.0)
  results = {}
  for impl in ('lax', _form(form)):
    model = networks.Primary(networks.uses_gap(input_kind), conv_impl=impl)
    variables = networks.init_variables(model, key, (1, size, size, channels))
    state = base.new_state(variables, optimizer)
    step = jax.jit(functools.partial(proposed.detector_train_step, model=model,
                                     input_kind=input_kind, loss_fn=losses.sigmoid_bce,
                                     optimizer=optimizer))
    new_state, step_metrics = step(state, constants, batch, targets, None)
    grads = jax.tree.map(lambda old, new: old - new, state.params, new_state.params)
    results[impl] = (step_metrics['loss'], new_state.batch_stats, grads)
  (loss_lax, upd_lax, grads_lax), (loss_cpu, upd_cpu, grads_cpu) = results['lax'], results[form]
  np.testing.assert_allclose(loss_cpu, loss_lax, rtol=1e-6)
  for got, want in zip(jax.tree.leaves(upd_cpu), jax.tree.leaves(upd_lax)):
    assert _max_rel(got, want) < 1e-5
  # Biases of convs followed by BatchNorm get ~0 gradients (rounding noise), so the tolerance
  # is relative to the largest gradient in the network.
  scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads_lax))
  for got, want in zip(jax.tree.leaves(grads_cpu), jax.tree.leaves(grads_lax)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)
  assert jax.tree.structure(grads_cpu) == jax.tree.structure(grads_lax)


@pytest.mark.parametrize('form', FORMS)
def test_stacked_heads_inference_is_the_same_under_each_form(form):
  mid = jax.random.normal(jax.random.key(4), (5, 8, 8, 16))
  heads = {impl: networks.StackedHeads(3, True, conv_impl=impl) for impl in ('lax', _form(form))}
  variables = networks.init_variables(heads['lax'], jax.random.key(5), mid.shape)
  out = {impl: m.apply(variables, mid, train=False) for impl, m in heads.items()}
  assert _max_rel(out[form].logit, out['lax'].logit) < 1e-5
  assert _max_rel(out[form].final_features, out['lax'].final_features) < 1e-5


def test_onednn_form_works_under_vmap_and_for_other_dtypes():
  """Stacked heads may be vmapped (heads_form='vmap'): the call then runs per element. float64
  inputs (jax_enable_x64) take the pure-XLA form instead of failing."""
  _form('onednn')
  x = jax.random.normal(jax.random.key(6), (3, 4, 9, 9, 5))
  kernel = jax.random.normal(jax.random.key(7), (3, 3, 3, 5, 6)) * 0.3
  got = jax.jit(jax.vmap(functools.partial(convolution.conv_same, stride=2, impl='onednn')))(
      x, kernel)
  want = jax.vmap(functools.partial(convolution.lax_conv, stride=2))(x, kernel)
  assert _max_rel(got, want) < 1e-5
  with jax.enable_x64(True):
    x64 = np.asarray(x[0], np.float64)
    got64 = convolution.conv_same(x64, np.asarray(kernel[0], np.float64), 1, impl='onednn')
    assert got64.dtype == jnp.float64
    assert _max_rel(got64, convolution.lax_conv(x64, np.asarray(kernel[0], np.float64), 1)) < 1e-12
    # The fused layers too: float64 runs unfused (oneDNN's BatchNorm is float32 only).
    primary = networks.Primary(True, conv_impl='onednn')
    image = jnp.ones((2, 16, 16, 3), jnp.float64)
    variables = primary.init(jax.random.key(0), image)
    trained, _ = primary.apply(variables, image, train=True, mutable=['batch_stats'])
    assert trained.logit.dtype == primary.apply(variables, image).logit.dtype == jnp.float64


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('relu', [True, False])
@pytest.mark.parametrize('case', CASES[2:6], ids=lambda c: 'b{}_{}x{}_c{}-{}_k{}s{}'.format(*c))
def test_fused_conv_bias_relu_matches_lax_forward_and_gradients(case, relu, form):
  """conv_bias_relu (the inference layers' fused op: one oneDNN primitive with bias and ReLU
  post-ops) is relu(lax.conv + bias), its gradients too (Grad-CAM differentiates inference)."""
  form = _form(form)
  batch, h, w, cin, cout, k, stride = case
  kx, kk, kb, ky = jax.random.split(jax.random.key(sum(case) + relu), 4)
  x = jax.random.normal(kx, (batch, h, w, cin))
  kernel = jax.random.normal(kk, (k, k, cin, cout)) * 0.3
  bias = jax.random.normal(kb, (cout,))

  def reference(x, kern, b):
    y = convolution.lax_conv(x, kern, stride) + b
    return jax.nn.relu(y) if relu else y
  fused = functools.partial(convolution.conv_bias_relu, stride=stride, impl=form, relu=relu)
  want, got = reference(x, kernel, bias), jax.jit(fused)(x, kernel, bias)
  assert _max_rel(got, want) < 1e-5
  target = jax.random.normal(ky, want.shape)
  loss = lambda f: jax.jit(jax.grad(lambda *a: jnp.sum(jnp.tanh(f(*a)) * target),
                                    argnums=(0, 1, 2)))(x, kernel, bias)
  for g, r in zip(loss(fused), loss(reference)):
    assert _max_rel(g, r) < 1e-5


@pytest.mark.parametrize('form', FORMS)
@pytest.mark.parametrize('gap', [True, False])
def test_primary_and_head_inference_equal_lax_with_batch_norm_folded(gap, form):
  """Inference on the onednn form folds each BatchNorm into its convolution (networks.Conv's
  affine): outputs, features and the input gradient (Grad-CAM) equal the unfused lax model's
  up to float32 rounding, with non-trivial BatchNorm statistics."""
  form = _form(form)
  x = jax.random.normal(jax.random.key(8), (3, 32, 32, 3 if gap else 1))
  models = {impl: networks.Primary(gap, conv_impl=impl) for impl in ('lax', form)}
  variables = networks.init_variables(models['lax'], jax.random.key(9), x.shape)
  keys = iter(jax.random.split(jax.random.key(10), 64))
  variables = jax.tree.map(lambda v: v + 0.5 * jax.random.uniform(next(keys), v.shape),
                           variables)
  out = {impl: m.apply(variables, x) for impl, m in models.items()}
  for field in ('logit', 'mid_features', 'final_features'):
    assert _max_rel(getattr(out[form], field), getattr(out['lax'], field)) < 1e-5
  grads = {impl: jax.grad(lambda x_, m=m: m.apply(variables, x_).logit.sum())(x)
           for impl, m in models.items()}
  assert _max_rel(grads[form], grads['lax']) < 1e-5
  heads = {impl: networks.SecondaryHead(gap, conv_impl=impl) for impl in ('lax', form)}
  mid = out['lax'].mid_features
  head_variables = networks.init_variables(heads['lax'], jax.random.key(11), mid.shape)
  head_variables = jax.tree.map(lambda v: v + 0.5 * jax.random.uniform(next(keys), v.shape),
                                head_variables)
  logits = {impl: m.apply(head_variables, mid).logit for impl, m in heads.items()}
  assert _max_rel(logits[form], logits['lax']) < 1e-5
