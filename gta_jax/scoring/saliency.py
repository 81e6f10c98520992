"""Class activation maps: CAM for pixel (GAP) models, Grad-CAM for DCT (Flatten) models, overlays.

CAM follows the release: sum_k w_k F_k(x, y) over the post-ReLU final maps F and the decision
kernel w, no bias, no sigmoid, no normalisation. Grad-CAM is the standard one by default (channel
weights = spatially averaged gradients of the logit, ReLU of the weighted sum); the release's
element-wise variant (ReLU of sum_k dp/dF_k * F_k, p the sigmoid probability, divided by the batch
maximum) is `grad_cam(..., variant='release')`. Standard Grad-CAM is scaled to [0, 1] per image.
"""
import cv2
import jax
import jax.numpy as jnp
import numpy as np

from gta_jax.models import networks


def cam(final_features: jax.Array, decision_kernel: jax.Array) -> jax.Array:
  """[..., h, w, C] post-ReLU maps, [C, 1] kernel -> [..., h, w] class activation map."""
  return jnp.einsum('...hwc,c->...hw', final_features, decision_kernel[:, 0])


def grad_cam(final_features: jax.Array, decision_params: dict, *, gap: bool,
             variant: str = 'standard') -> jax.Array:
  """[B, h, w, C] maps and the decision layer's params -> [B, h, w] Grad-CAM."""
  decision = networks.DecisionLayer(gap)

  def logits(features):
    return decision.apply({'params': decision_params}, features)

  if variant == 'standard':
    grads = jax.grad(lambda f: logits(f).sum())(final_features)
    weights = grads.mean(axis=(1, 2), keepdims=True)
    maps = jax.nn.relu((weights * final_features).sum(-1))
    # Per-image max scaling (usual Grad-CAM practice) so the overlay's colour scale is [0, 1].
    return maps / jnp.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-12)
  if variant == 'release':
    grads = jax.grad(lambda f: jax.nn.sigmoid(logits(f)).sum())(final_features)
    maps = jax.nn.relu((grads * final_features).sum(-1))
    return maps / jnp.maximum(maps.max(), 1e-12)
  raise ValueError(f'unknown Grad-CAM variant {variant!r}; use "standard" or "release".')


def spectrum_image(image: np.ndarray) -> np.ndarray:
  """[H, W, 3] uint8 -> [H, W, 3] uint8 picture of its log-DCT spectrum (min-max scaled grey).

  Grad-CAM of a DCT model lives on the spectrum, so that is what it is drawn over.
  """
  from gta_jax.models import spectral  # local: keeps this module light for plotting-only users
  log_spectrum = spectral.log_dct_numpy(image)
  low, high = np.percentile(log_spectrum, [1, 99.9])
  grey = np.clip((log_spectrum - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)
  return np.repeat(grey[..., None], 3, axis=-1)


CAM_SCALES = ('minmax', 'release')


def overlay(image: np.ndarray, saliency: np.ndarray, label: str = '',
            scale: str = 'release') -> np.ndarray:
  """Blends a map onto an image as the release does: bilinear resize, uint8(clip(255*map)),
  Jet colour map, 0.5/0.5 blend; `label` is written in the top-left corner.

  scale='release' uses the map's values as they are (the release's CAM often saturates);
  'minmax' stretches each map to [0, 1] first, so where it is high is always visible.
  image: [H, W, 3] uint8 RGB; saliency: [h, w] float. Returns [H, W, 3] uint8 RGB.
  """
  height, width = image.shape[:2]
  saliency = np.asarray(saliency, np.float32)
  if scale == 'minmax':
    low, high = float(saliency.min()), float(saliency.max())
    saliency = (saliency - low) / (high - low) if high > low else np.zeros_like(saliency)
  elif scale != 'release':
    raise ValueError(f'unknown CAM scale {scale!r}; choose one of {", ".join(CAM_SCALES)}.')
  resized = cv2.resize(saliency, (width, height), interpolation=cv2.INTER_LINEAR)
  heat = cv2.applyColorMap(np.clip(255 * resized, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
  heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
  blended = cv2.addWeighted(heat, 0.5, np.ascontiguousarray(image, np.uint8), 0.5, 0)
  if label:
    font = max(0.3, min(width, height) / 400)
    thickness = max(1, int(round(font * 2)))
    (text_w, text_h), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, thickness)
    cv2.rectangle(blended, (0, 0), (text_w + 6, text_h + baseline + 6), (0, 0, 0), cv2.FILLED)
    cv2.putText(blended, label, (3, text_h + 3), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255),
                thickness, cv2.LINE_AA)
  return blended
