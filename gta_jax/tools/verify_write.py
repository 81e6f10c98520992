"""Writes the install self-check's data (gta_jax/verify_data/): images, model and expectations.

`python -m gta_jax.tools.verify_write DIR` runs this once, on the developer's machine (with
jax_enable_x64, for the float64 truth); the check itself (gta_jax/tools/verify.py) only reads. What it writes:

- images/*.png: six procedural images (no photographs, nothing downloaded): five 32x32 (a smooth
  colour gradient with ripples, a period-2 upsampling-like checker, seeded noise, 4x4-block
  noise, and a near-grey one: 128 with +-1 specks) and one 40x24 (colour rings).
- model.npz: the proposed detector (Primary, 27,261 variables with its batch-norm statistics)
  and two heads (21,345 each), every value float16 (stored as float16, cast to float32 on load,
  so the stored bytes define the weights exactly). Kernels are He-scaled normals from fixed keys
  (the training init's N(0, 0.02) would leave every activation under batch norm's epsilon and
  every probability at 0.5); batch-norm scales and offsets are drawn, and the running statistics
  are those of the five 32x32 images, so activations stay near unit scale; each decision layer is
  scaled and offset so that its logits over the six images spread over +-2.4 (probabilities
  0.08-0.92), where a wrong result shows.
- expected.npz: the images' pixels; the float64 logits of the primary and heads and the float64
  CAMs of each image scored alone (the model's exact function of the float16-defined weights: what
  any backend's float32 result must approach); the float64 host log-DCT; JPEG outputs at
  qualities 10, 50, 75; blurs with kernels 3 and 9; one crop. Flat keys, no pickles.
- expected.json: the images' names, the heads' names, the crop's parameters and the environment
  that wrote the files.
"""
import json
import pathlib
import sys

import numpy as np
from PIL import Image

from gta_jax.tools import verify
from gta_jax.tools.verify import flatten
from gta_jax.tools.verify import unflatten

IMAGE_NAMES = ('gradient', 'checker', 'noise', 'blocks', 'near_grey', 'rings_40x24')
HEAD_NAMES = ('head_a', 'head_b')
JPEG_QUALITIES = (10, 50, 75)
BLUR_KERNELS = (3, 9)
CROP = {'fraction': 0.15, 'split_y': 0.3, 'split_x': 0.7}


def make_images() -> dict[str, np.ndarray]:
  """The six procedural images, [H, W, 3] uint8 (a fixed seed: the same on every run)."""
  rng = np.random.default_rng(20220601)
  y, x = np.mgrid[0:32, 0:32].astype(np.float64)
  gradient = np.stack([x * 8, y * 8, 128 + 60 * np.sin(x / 3) * np.cos(y / 4)], -1)
  checker = 110 + 50 * ((x + y) % 2)[..., None] + np.array([0, 30, 60]) + 20 * np.sin(y / 5)[..., None]
  noise = rng.integers(0, 256, (32, 32, 3))
  blocks = np.kron(rng.integers(30, 230, (8, 8, 3)), np.ones((4, 4, 1)))
  near_grey = 128 + rng.choice([-1, 0, 0, 0, 0, 0, 1], (32, 32, 1)) * np.ones((1, 1, 3))
  yy, xx = np.mgrid[0:24, 0:40].astype(np.float64)
  radius = np.hypot(yy - 11.5, xx - 19.5)
  rings = np.stack([128 + 100 * np.cos(radius), 128 + 100 * np.sin(radius / 2), 255 - 6 * radius], -1)
  arrays = [gradient, checker, noise, blocks, near_grey, rings]
  return {name: np.clip(np.rint(a), 0, 255).astype(np.uint8) for name, a in zip(IMAGE_NAMES, arrays)}


def _to_float16(tree):
  import jax
  return jax.tree.map(lambda a: np.asarray(a, np.float64).astype(np.float16), tree)


def _as64(tree):
  import jax
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def make_model(images: dict[str, np.ndarray]) -> dict:
  """-> {'primary': ..., 'heads': ...} float16 variables (see the module docstring)."""
  import jax
  import jax.numpy as jnp
  from gta_jax.models import networks

  def he(key, shape):  # fan-in scaled normal kernels: unit-scale activations before batch norm
    fan_in = int(np.prod(shape[:-1])) if len(shape) == 4 else int(np.prod(shape[1:-1]))
    return np.asarray(jax.random.normal(key, shape, jnp.float64)) * np.sqrt(2.0 / fan_in)

  def draw(variables, key):
    params = flatten(variables['params'])
    keys = jax.random.split(key, len(params))
    drawn = {}
    for (name, value), k in zip(sorted(params.items()), keys):
      k1, k2 = jax.random.split(k)
      if name.endswith('kernel') and 'decision' not in name:
        drawn[name] = he(k1, value.shape)
      elif name.endswith('scale'):
        drawn[name] = np.asarray(jax.random.uniform(k1, value.shape, jnp.float64, 0.7, 1.4))
      elif name.endswith('bias'):
        drawn[name] = 0.2 * np.asarray(jax.random.normal(k2, value.shape, jnp.float64))
      else:  # decision kernels: scaled below
        drawn[name] = np.asarray(jax.random.normal(k1, value.shape, jnp.float64))
    return {'params': unflatten(drawn), 'batch_stats': variables['batch_stats']}

  same = np.stack([images[n] for n in IMAGE_NAMES if images[n].shape == (32, 32, 3)])
  x = np.asarray(same, np.float64) / 127.5 - 1.0
  primary_module = networks.Primary(True, bn_momentum=0.0, conv_impl='lax')
  primary = draw(jax.device_get(primary_module.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3), jnp.float64), train=False)),
      jax.random.PRNGKey(1))
  # Momentum 0: one training-mode pass leaves each layer's batch statistics as its running ones.
  primary = _to_float16(primary)
  _, updates = primary_module.apply(_as64(primary), x, train=True, mutable=['batch_stats'])
  primary = _to_float16({'params': primary['params'], 'batch_stats': updates['batch_stats']})
  out = networks.Primary(True, conv_impl='lax').apply(_as64(primary), x, train=False)
  heads_module = networks.StackedHeads(len(HEAD_NAMES), True, bn_momentum=0.0, conv_impl='lax')
  heads = draw(jax.device_get(heads_module.init(
      jax.random.PRNGKey(2), jnp.zeros((1, 8, 8, 16), jnp.float64), train=False)),
      jax.random.PRNGKey(3))
  heads = _to_float16(heads)
  _, updates = heads_module.apply(_as64(heads), out.mid_features, train=True,
                                  mutable=['batch_stats'])
  heads = _to_float16({'params': heads['params'], 'batch_stats': updates['batch_stats']})
  variables = {'primary': primary, 'heads': heads}
  # Decision layers: scaled and offset so that the six images' logits spread over +-2.4.
  logits = _truth(variables, images)
  for (module, index), row in zip([('primary', None)] + [('heads', k) for k in range(len(HEAD_NAMES))],
                                  [logits['fake']] + list(logits['heads'])):
    params = variables[module]['params']['decision'] if index is None else (
        variables[module]['params']['heads']['decision'])
    kernel = np.asarray(params['dense']['kernel'], np.float64)
    bias = np.asarray(params['dense']['bias'], np.float64)
    k = kernel if index is None else kernel[index]
    b = bias if index is None else bias[index]
    raw = row - b[0]
    scale = 2.4 / np.max(np.abs(raw - raw.mean()))
    new_k, new_b = k * scale, np.array([-raw.mean() * scale])
    if index is None:
      params['dense']['kernel'], params['dense']['bias'] = new_k, new_b
    else:
      kernel[index], bias[index] = new_k, new_b
      params['dense']['kernel'], params['dense']['bias'] = kernel, bias
  return _to_float16(variables)


def _truth(variables, images) -> dict:
  """The float64 logits and CAMs of each image scored alone (needs jax_enable_x64)."""
  import jax
  from gta_jax.models import networks
  from gta_jax.scoring import saliency
  v = _as64(variables)
  fake, heads, cams = [], [], {}
  for name in IMAGE_NAMES:
    x = np.asarray(images[name], np.float64)[None] / 127.5 - 1.0
    primary = networks.Primary(True, conv_impl='lax').apply(v['primary'], x, train=False)
    assert primary.logit.dtype == np.float64
    out = networks.StackedHeads(len(HEAD_NAMES), True, conv_impl='lax').apply(
        v['heads'], primary.mid_features, train=False)
    fake.append(float(primary.logit[0]))
    heads.append(np.asarray(out.logit[:, 0]))
    maps = [saliency.cam(primary.final_features[0], v['primary']['params']['decision']['dense']['kernel'])]
    for k in range(len(HEAD_NAMES)):
      maps.append(saliency.cam(out.final_features[k, 0],
                               v['heads']['params']['heads']['decision']['dense']['kernel'][k]))
    cams[name] = np.asarray(jax.device_get(np.stack(maps)), np.float64)
  return {'fake': np.array(fake), 'heads': np.stack(heads, axis=1), 'cams': cams}


def write(directory) -> None:
  """Writes images/, model.npz, expected.npz and expected.json into `directory`."""
  import jax
  jax.config.update('jax_enable_x64', True)  # the float64 truth; this process writes and exits
  from gta_jax.data import augment
  from gta_jax.models import spectral

  directory = pathlib.Path(directory)
  (directory / 'images').mkdir(parents=True, exist_ok=True)
  images = make_images()
  for name, rgb in images.items():
    Image.fromarray(rgb).save(directory / 'images' / f'{name}.png', optimize=True)
  variables = make_model(images)
  np.savez_compressed(directory / 'model.npz', **flatten(variables))
  variables = verify.load_weights(directory / 'model.npz')  # as the check reads them
  truth = _truth(variables, images)
  probabilities = 1 / (1 + np.exp(-np.concatenate([truth['fake'][None], truth['heads']])))
  if not (probabilities.min() > 0.05 and probabilities.max() < 0.95):
    raise AssertionError(f'probabilities {probabilities} are not spread within (0.05, 0.95)')
  expected = {'logit_fake': truth['fake'], 'logit_heads': truth['heads']}
  for name, rgb in images.items():
    expected[f'image/{name}'] = rgb
    expected[f'cam/{name}'] = truth['cams'][name]
    expected[f'log_dct/{name}'] = spectral.log_dct_numpy(rgb)
    for q in JPEG_QUALITIES:
      expected[f'jpeg_q{q}/{name}'] = augment.jpeg(rgb, q)
    for k in BLUR_KERNELS:
      expected[f'blur_k{k}/{name}'] = augment.blur(rgb, k)
    expected[f'crop/{name}'] = augment.crop(rgb, **CROP)
  np.savez_compressed(directory / 'expected.npz', **expected)
  meta = {'images': list(IMAGE_NAMES), 'heads': list(HEAD_NAMES),
          'jpeg_qualities': list(JPEG_QUALITIES), 'blur_kernels': list(BLUR_KERNELS),
          'crop': CROP, 'written_by': verify.environment()}
  (directory / 'expected.json').write_text(json.dumps(meta, indent=1) + '\n')
  print(f'wrote {directory}: p_fake {np.round(probabilities[0], 3).tolist()}, '
        f'p_heads {np.round(probabilities[1:], 3).tolist()}')


def main(argv=None) -> int:
  args = sys.argv[1:] if argv is None else argv
  if len(args) != 1 or args[0].startswith('-'):
    print('usage: python -m gta_jax.tools.verify_write DIR  (writes the self-check\'s data; '
          'the shipped folder is gta_jax/verify_data)', file=sys.stderr)
    return 2
  write(args[0])
  return 0


if __name__ == '__main__':
  sys.exit(main())
