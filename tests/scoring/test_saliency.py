import jax
import jax.numpy as jnp
import numpy as np

from gta_jax.models import networks
from gta_jax.scoring import saliency

KEY = jax.random.key(0)


def test_cam_averages_to_the_logit_minus_bias_for_gap_models():
  """For GAP -> Dense, mean over (x, y) of sum_k w_k F_k + b is exactly the logit."""
  model = networks.Primary(True)
  variables = networks.init_variables(model, KEY, (1, 64, 64, 3))
  variables = jax.tree.map(lambda a: a * 10 if a.ndim > 1 else a, variables)  # non-trivial maps
  out = model.apply(variables, jax.random.normal(KEY, (2, 64, 64, 3)))
  decision = variables['params']['decision']['dense']
  maps = saliency.cam(out.final_features, decision['kernel'])
  assert maps.shape == (2, 8, 8)
  np.testing.assert_allclose(maps.mean(axis=(1, 2)) + decision['bias'][0], out.logit,
                             rtol=1e-4, atol=1e-5)


def test_grad_cam_standard_and_release_variants():
  features = jax.nn.relu(jax.random.normal(KEY, (2, 4, 4, 3)))
  kernel = jax.random.normal(jax.random.key(1), (48, 1))
  params = {'dense': {'kernel': kernel, 'bias': jnp.zeros(1)}}
  standard = saliency.grad_cam(features, params, gap=False)
  # d logit / d F is the kernel reshaped to the maps; channel weight = its spatial mean.
  weights = kernel[:, 0].reshape(4, 4, 3).mean(axis=(0, 1))
  expected = jax.nn.relu((features * weights).sum(-1))
  expected = expected / expected.max(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(standard, expected, rtol=1e-5, atol=1e-6)
  release = saliency.grad_cam(features, params, gap=False, variant='release')
  logits = features.reshape(2, -1) @ kernel[:, 0]
  p = jax.nn.sigmoid(logits)
  grads = (p * (1 - p))[:, None, None, None] * kernel[:, 0].reshape(4, 4, 3)
  raw = jax.nn.relu((grads * features).sum(-1))
  np.testing.assert_allclose(release, raw / raw.max(), rtol=1e-5, atol=1e-6)


def test_overlay_is_jet_blend_at_half_weight():
  image = np.full((20, 30, 3), 100, np.uint8)
  hot = saliency.overlay(image, np.ones((5, 5)))
  cold = saliency.overlay(image, np.zeros((5, 5)))
  assert hot.shape == image.shape and hot.dtype == np.uint8
  # Jet: 1.0 -> dark red (128, 0, 0) in RGB, 0.0 -> dark blue (0, 0, 128); blended 0.5 / 0.5.
  np.testing.assert_allclose(hot[10, 15], [114, 50, 50], atol=2)
  np.testing.assert_allclose(cold[10, 15], [50, 50, 114], atol=2)
  labelled = saliency.overlay(image, np.zeros((5, 5)), 'FAKE:99.0%')
  assert (labelled != cold).any()
