"""Offline generation of the built-in dataset: real crops and their reconstructions by four
auto-encoders that differ only in their upsampler.

Content-matched pairs (the principle of DRCT, ICML 2024, and of self-blended images, CVPR 2022):
every generator reconstructs the very crops that form the real class, so a real crop and its four
fakes share content, scale and resampling history, and differ only by what the generator's
decoder leaves behind. A detector can separate them by neither content nor (much) sharpness
(the fakes are 26-28 dB from their inputs, see the build log); it has to learn the upsampling
fingerprint.

Each auto-encoder squeezes 2x2 pixel blocks into 32 channels (space-to-depth and a dense layer),
mixes them with a 3x3 convolution, and decodes with its architecture's x2 upsampler followed by
a 3x3 convolution to RGB; it is trained (L1, Adam, cosine decay) on 32 px patches of the real
crops. Everything is deterministic from the seed.
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

from gta_jax import convolution

ARCHITECTURES = ('tconv', 'nearest', 'bilinear', 'pixelshuffle')

# (package, path inside it): every colour photograph that ships in the wheels requirements.txt
# installs (grey-level images, renders, charts and icons left out); never a loader that downloads.
BUNDLED_PHOTOS = (
    ('skimage', 'data/astronaut.png'),
    ('skimage', 'data/chelsea.png'),
    ('skimage', 'data/coffee.png'),
    ('skimage', 'data/motorcycle_left.png'),
    ('skimage', 'data/motorcycle_right.png'),
    ('skimage', 'data/rocket.jpg'),
    ('skimage', 'data/hubble_deep_field.jpg'),
    ('skimage', 'data/ihc.png'),
    ('skimage', 'data/retina.jpg'),
    ('sklearn', 'datasets/images/china.jpg'),
    ('sklearn', 'datasets/images/flower.jpg'),
    ('matplotlib', 'mpl-data/sample_data/grace_hopper.jpg'),
)
# A crop whose luminance varies less than this (std, 0-255) is drawn again: flat black borders
# (retina, hubble) carry no fingerprint and would be a free "real" tell.
MIN_CROP_STD = 6.0
LOW_CHANNELS = 32   # auto-encoder width at half resolution
HIGH_CHANNELS = 16  # width after the upsampler
PATCH = 32          # training patch (px)
BATCH = 32


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


def random_crops(photos, count: int, size: int, rng: np.random.Generator) -> np.ndarray:
  """[count, size, size, 3] uint8 crops of evenly chosen photos, each LANCZOS down-scaled by a
  random factor in [1, 3] first (as far as the photo allows), none of them flat."""
  crops = np.empty((count, size, size, 3), np.uint8)
  for i in range(count):
    photo = photos[i % len(photos)]  # even weight per source photo
    for _ in range(20):
      max_scale = min(photo.shape[0], photo.shape[1]) / size
      scale = rng.uniform(1.0, min(3.0, max_scale))
      region = photo
      if scale > 1.0:
        new_size = (max(size, int(photo.shape[1] / scale)), max(size, int(photo.shape[0] / scale)))
        region = np.asarray(Image.fromarray(photo).resize(new_size, Image.Resampling.LANCZOS))
      top = rng.integers(0, region.shape[0] - size + 1)
      left = rng.integers(0, region.shape[1] - size + 1)
      crops[i] = region[top:top + size, left:left + size]
      if crops[i].mean(-1).std() >= MIN_CROP_STD:
        break
  return crops[rng.permutation(count)]


class Conv3x3(nn.Module):
  """3x3 'SAME' convolution with bias, lowered by gta_jax.convolution (fast on XLA's CPU)."""
  features: int

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (3, 3, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    return convolution.conv_same(x, kernel, 1) + bias


def space_to_depth(x: jax.Array) -> jax.Array:
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // 2, w // 2, 4 * c)


def depth_to_space(x: jax.Array) -> jax.Array:
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, 2, 2, c // 4).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * 2, w * 2, c // 4)


class TransposedConv4x4(nn.Module):
  """A stride-2 transposed convolution with a 4x4 kernel, computed per output phase: each of the
  four phases of the x2 output sees its own 2x2 taps of the kernel (the uneven overlap behind
  the checkerboard fingerprint), written as one 3x3 convolution to 4x the channels."""
  features: int

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (4, 4, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    phases = jnp.zeros((3, 3, x.shape[-1], 2, 2, self.features), kernel.dtype)
    for a in range(2):
      for b in range(2):
        for di in range(2):
          for dj in range(2):
            phases = phases.at[a + di, b + dj, :, a, b].set(kernel[2 * di + a, 2 * dj + b])
    out = convolution.conv_same(x, phases.reshape(3, 3, x.shape[-1], 4 * self.features), 1)
    return depth_to_space(out) + bias


class ReconstructingGenerator(nn.Module):
  """[B, S, S, 3] in [-1, 1] -> its reconstruction through a x2 bottleneck; only `upsampling`
  differs between sources."""
  upsampling: str

  def _upsample(self, h):
    if self.upsampling == 'tconv':
      return TransposedConv4x4(HIGH_CHANNELS, name='up')(h)
    if self.upsampling == 'pixelshuffle':
      return depth_to_space(Conv3x3(4 * HIGH_CHANNELS, name='up')(h))
    b, hh, ww, c = h.shape
    h = jax.image.resize(h, (b, hh * 2, ww * 2, c), method=self.upsampling)
    return Conv3x3(HIGH_CHANNELS, name='up')(h)

  @nn.compact
  def __call__(self, images):
    h = nn.relu(nn.Dense(LOW_CHANNELS)(space_to_depth(images)))
    h = nn.relu(Conv3x3(LOW_CHANNELS)(h))
    h = nn.relu(self._upsample(h))
    return Conv3x3(3)(h)


def to_unit(images: np.ndarray) -> jax.Array:
  return jnp.asarray(images, jnp.float32) / 127.5 - 1


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  """Peak signal-to-noise ratio (dB) of two uint8 image stacks."""
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def train_generator(architecture: str, targets: np.ndarray, seed: int, steps: int,
                    learning_rate: float = 3e-3):
  """Trains one auto-encoder to reconstruct `targets` (L1 on random 32 px patches)."""
  model = ReconstructingGenerator(architecture)
  key = jax.random.key(seed)
  patch = min(PATCH, targets.shape[1])
  params = model.init(key, jnp.zeros((1, patch, patch, 3)))['params']
  optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, max(steps, 1)))
  opt_state = optimizer.init(params)
  data = to_unit(targets)

  @jax.jit
  def step(params, opt_state, index):
    rng = jax.random.fold_in(key, index)
    pick_key, y_key, x_key = jax.random.split(rng, 3)
    picks = jax.random.randint(pick_key, (BATCH,), 0, data.shape[0])
    # Even offsets: the patch keeps the image's 2x2 block grid, as generation sees it.
    top = jax.random.randint(y_key, (), 0, data.shape[1] - patch + 1) // 2 * 2
    left = jax.random.randint(x_key, (), 0, data.shape[2] - patch + 1) // 2 * 2
    batch = jax.lax.dynamic_slice(data[picks], (0, top, left, 0), (BATCH, patch, patch, 3))

    def loss_fn(p):
      return jnp.abs(model.apply({'params': p}, batch) - batch).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  for index in range(steps):
    params, opt_state, _ = step(params, opt_state, index)
  return params


def reconstruct(architecture: str, params, inputs: np.ndarray, batch_size: int = 50) -> np.ndarray:
  """Real crops [N, S, S, 3] uint8 -> the generator's reconstructions, uint8."""
  model = ReconstructingGenerator(architecture)
  apply = jax.jit(lambda x: model.apply({'params': params}, x))
  out = []
  for start in range(0, len(inputs), batch_size):
    fake = apply(to_unit(inputs[start:start + batch_size]))
    out.append(np.asarray(jnp.clip(jnp.round((fake + 1) * 127.5), 0, 255).astype(jnp.uint8)))
  return np.concatenate(out) if out else np.zeros((0, *inputs.shape[1:]), np.uint8)


def generate_sources(size: int, per_source: int, cross_seed_count: int, train_steps: int,
                     seed: int, training_count: int, log=print) -> tuple[dict, dict, dict]:
  """-> ({'real': crops, arch: reconstructions of those crops, ...},
         {arch: a second seed's reconstructions of the last `cross_seed_count` crops},
         {arch: PSNR in dB of the main generator against its inputs}); deterministic in `seed`.

  Generators train on the first `training_count` crops (the training split), so the test
  crops are reconstructed by networks that never saw them.
  """
  start = time.time()
  photos = load_bundled_photos()
  rng = np.random.default_rng(seed)
  real = random_crops(photos, per_source, size, rng)
  sources, cross_seed, fidelity = {'real': real}, {}, {}
  for index, architecture in enumerate(ARCHITECTURES):
    params = train_generator(architecture, real[:training_count], seed * 100 + index, train_steps)
    sources[architecture] = reconstruct(architecture, params, real)
    fidelity[architecture] = psnr(sources[architecture], real)
    log(f'  generator {architecture}: PSNR {fidelity[architecture]:.1f} dB against its inputs '
        f'after {train_steps} steps ({time.time() - start:.0f}s)')
    if cross_seed_count:
      params = train_generator(architecture, real[:training_count], seed * 100 + 50 + index,
                               train_steps)
      cross_seed[architecture] = reconstruct(architecture, params, real[-cross_seed_count:])
      log(f'  generator {architecture}, second seed: PSNR '
          f'{psnr(cross_seed[architecture], real[-cross_seed_count:]):.1f} dB '
          f'({time.time() - start:.0f}s)')
  return sources, cross_seed, fidelity
