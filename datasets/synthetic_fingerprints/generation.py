"""Offline generation of the built-in dataset: real crops and four upsampling "GANs".

Real images are random crops (at a random down-scale) of photos bundled inside installed wheels,
each source weighted evenly. The left half of every photo feeds the real class; the right half is
held apart to train the generators and to feed them at generation time, so no real-class pixels
are ever reconstructed. Each generator is a small super-resolution net (input: the crop
down-sampled 4x) that differs from the others only in its two x2 upsampling layers, trained
briefly to reconstruct the held-apart crops. Everything is deterministic from the seed.
"""
import importlib.util
import pathlib
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

ARCHITECTURES = ('tconv', 'nearest', 'bilinear', 'pixelshuffle')

# (package, path inside it): photos that ship in the wheels; never a loader that downloads.
BUNDLED_PHOTOS = (
    ('skimage', 'data/astronaut.png'),
    ('skimage', 'data/chelsea.png'),
    ('skimage', 'data/coffee.png'),
    ('skimage', 'data/motorcycle_left.png'),
    ('skimage', 'data/rocket.jpg'),
    ('skimage', 'data/hubble_deep_field.jpg'),
    ('sklearn', 'datasets/images/china.jpg'),
    ('sklearn', 'datasets/images/flower.jpg'),
    ('matplotlib', 'mpl-data/sample_data/grace_hopper.jpg'),
)


def load_bundled_photos() -> list[np.ndarray]:
  """The bundled photos as [H, W, 3] uint8 arrays, read from the installed packages' folders."""
  photos = []
  for package, relative in BUNDLED_PHOTOS:
    spec = importlib.util.find_spec(package)
    if spec is None:
      raise FileNotFoundError(f'{package} is not installed; pip install -r requirements.txt')
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
      raise FileNotFoundError(f'bundled photo {path} is missing from the {package} installation')
    photos.append(np.asarray(Image.open(path).convert('RGB')))
  return photos


def random_crops(photos, count: int, size: int, rng: np.random.Generator, half: str) -> np.ndarray:
  """[count, size, size, 3] uint8 crops from the left or right half of evenly chosen photos."""
  crops = np.empty((count, size, size, 3), np.uint8)
  for i in range(count):
    photo = photos[i % len(photos)]  # even weight per source photo
    width = photo.shape[1]
    region = photo[:, :width // 2] if half == 'left' else photo[:, width // 2:]
    max_scale = min(region.shape[0], region.shape[1]) / size
    scale = rng.uniform(1.0, min(3.0, max_scale))
    if scale > 1.0:
      new_size = (max(size, int(region.shape[1] / scale)), max(size, int(region.shape[0] / scale)))
      region = np.asarray(Image.fromarray(region).resize(new_size, Image.Resampling.LANCZOS))
    top = rng.integers(0, region.shape[0] - size + 1)
    left = rng.integers(0, region.shape[1] - size + 1)
    crops[i] = region[top:top + size, left:left + size]
  return crops[rng.permutation(count)]


class UpsamplingGenerator(nn.Module):
  """Low-res [B, S/4, S/4, 3] in [-1, 1] -> [B, S, S, 3]; only `upsampling` differs between sources."""
  upsampling: str
  width: int = 16

  def _upsample(self, h, index):
    if self.upsampling == 'tconv':
      return nn.ConvTranspose(self.width, (4, 4), strides=(2, 2), padding='SAME', name=f'up_{index}')(h)
    if self.upsampling == 'pixelshuffle':
      h = nn.Conv(4 * self.width, (3, 3), padding='SAME', name=f'up_{index}')(h)
      b, hh, ww, c = h.shape
      h = h.reshape(b, hh, ww, 2, 2, c // 4).transpose(0, 1, 3, 2, 4, 5)
      return h.reshape(b, hh * 2, ww * 2, c // 4)
    method = {'nearest': 'nearest', 'bilinear': 'bilinear'}[self.upsampling]
    b, hh, ww, c = h.shape
    h = jax.image.resize(h, (b, hh * 2, ww * 2, c), method=method)
    return nn.Conv(self.width, (3, 3), padding='SAME', name=f'up_{index}')(h)

  @nn.compact
  def __call__(self, low):
    h = nn.relu(nn.Conv(self.width, (3, 3), padding='SAME')(low))
    for index in range(2):
      h = nn.relu(self._upsample(h, index))
      h = nn.relu(nn.Conv(self.width, (3, 3), padding='SAME')(h))
    return jnp.tanh(nn.Conv(3, (3, 3), padding='SAME')(h))


def to_unit(images: np.ndarray) -> jax.Array:
  return jnp.asarray(images, jnp.float32) / 127.5 - 1


def downsample4(x: jax.Array) -> jax.Array:
  return nn.avg_pool(x, (4, 4), (4, 4))


def train_generator(architecture: str, targets: np.ndarray, seed: int, steps: int,
                    batch_size: int = 16, patch: int = 64):
  """Briefly trains one generator to reconstruct `targets` from their 4x down-samples (L1)."""
  model = UpsamplingGenerator(architecture)
  key = jax.random.key(seed)
  patch = min(patch, targets.shape[1])
  params = model.init(key, jnp.zeros((1, patch // 4, patch // 4, 3)))['params']
  optimizer = optax.adam(2e-3)
  opt_state = optimizer.init(params)
  data = to_unit(targets)

  @jax.jit
  def step(params, opt_state, index):
    rng = jax.random.fold_in(key, index)
    pick_key, y_key, x_key = jax.random.split(rng, 3)
    picks = jax.random.randint(pick_key, (batch_size,), 0, data.shape[0])
    top = jax.random.randint(y_key, (), 0, data.shape[1] - patch + 1) // 4 * 4
    left = jax.random.randint(x_key, (), 0, data.shape[2] - patch + 1) // 4 * 4
    batch = jax.lax.dynamic_slice(data[picks], (0, top, left, 0), (batch_size, patch, patch, 3))

    def loss_fn(p):
      return jnp.abs(model.apply({'params': p}, downsample4(batch)) - batch).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  for index in range(steps):
    params, opt_state, loss = step(params, opt_state, index)
  return params, float(loss)


def generate_fakes(architecture: str, params, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
  """Held-apart real crops [N, S, S, 3] uint8 -> the generator's reconstructions, uint8."""
  model = UpsamplingGenerator(architecture)
  apply = jax.jit(lambda x: model.apply({'params': params}, downsample4(x)))
  out = []
  for start in range(0, len(inputs), batch_size):
    fake = apply(to_unit(inputs[start:start + batch_size]))
    out.append(np.asarray(jnp.clip(jnp.round((fake + 1) * 127.5), 0, 255).astype(jnp.uint8)))
  return np.concatenate(out) if out else np.zeros((0, *inputs.shape[1:]), np.uint8)


def generate_sources(size: int, per_source: int, cross_seed_count: int, train_steps: int,
                     seed: int, log=print) -> dict:
  """-> {'real': crops, arch: fakes, ...} and {arch: cross-seed fakes}; deterministic in `seed`."""
  start = time.time()
  photos = load_bundled_photos()
  rng = np.random.default_rng(seed)
  sources = {'real': random_crops(photos, per_source, size, rng, 'left')}
  training_crops = random_crops(photos, max(256, per_source // 2), size, rng, 'right')
  generator_inputs = random_crops(photos, per_source + cross_seed_count, size, rng, 'right')
  cross_seed = {}
  for index, architecture in enumerate(ARCHITECTURES):
    params, loss = train_generator(architecture, training_crops, seed * 100 + index, train_steps)
    sources[architecture] = generate_fakes(architecture, params, generator_inputs[:per_source])
    log(f'  generator {architecture}: L1 {loss:.3f} after {train_steps} steps '
        f'({time.time() - start:.0f}s)')
    if cross_seed_count:
      params, _ = train_generator(architecture, training_crops, seed * 100 + 50 + index, train_steps)
      cross_seed[architecture] = generate_fakes(architecture, params,
                                                generator_inputs[per_source:])
  return sources, cross_seed
