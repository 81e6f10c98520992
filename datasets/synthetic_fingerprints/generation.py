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
import functools
import importlib.util
import pathlib
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

from gta_jax.models import convolution

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


def _impl() -> str:
  """The pure-XLA lowering ('cpu' on the CPU, 'lax' elsewhere), never oneDNN: the built-in data's
  bytes must not depend on whether oneDNN builds on this machine, and oneDNN's rounding depends
  on the batch an image is generated in (the variants regenerate some images in other batches)."""
  return 'cpu' if jax.default_backend() == 'cpu' else 'lax'


class Conv3x3(nn.Module):
  """3x3 'SAME' convolution with bias, lowered by gta_jax.convolution (fast on XLA's CPU)."""
  features: int

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (3, 3, x.shape[-1], self.features))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    return convolution.conv_same(x, kernel, 1, _impl()) + bias


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
    out = convolution.conv_same(x, phases.reshape(3, 3, x.shape[-1], 4 * self.features), 1,
                                _impl())
    return depth_to_space(out) + bias


class ReconstructingGenerator(nn.Module):
  """[B, S, S, 3] in [-1, 1] -> its reconstruction through a x2 bottleneck; only `upsampling`
  differs between sources (`width` scales the channels: the 'wider' variant)."""
  upsampling: str
  width: float = 1.0

  def _upsample(self, h, channels):
    if self.upsampling == 'tconv':
      return TransposedConv4x4(channels, name='up')(h)
    if self.upsampling == 'pixelshuffle':
      return depth_to_space(Conv3x3(4 * channels, name='up')(h))
    b, hh, ww, c = h.shape
    h = jax.image.resize(h, (b, hh * 2, ww * 2, c), method=self.upsampling)
    return Conv3x3(channels, name='up')(h)

  @nn.compact
  def __call__(self, images):
    low, high = round(LOW_CHANNELS * self.width), round(HIGH_CHANNELS * self.width)
    h = nn.relu(nn.Dense(low)(space_to_depth(images)))
    h = nn.relu(Conv3x3(low)(h))
    h = nn.relu(self._upsample(h, high))
    return Conv3x3(3)(h)


def to_unit(images: np.ndarray) -> jax.Array:
  return jnp.asarray(images, jnp.float32) / 127.5 - 1


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  """Peak signal-to-noise ratio (dB) of two uint8 image stacks."""
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


@functools.lru_cache(maxsize=None)
def _training_step(architecture: str, width: float, loss_kind: str, learning_rate: float,
                   steps: int, patch: int):
  """(model, optimizer, jitted step) for one generator recipe, built once: the 38 generators of
  the `variants` config share a handful of recipes, and compiling dominated their build."""
  model = ReconstructingGenerator(architecture, width)
  optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, max(steps, 1)))

  @jax.jit
  def step(params, opt_state, data, key, index):
    rng = jax.random.fold_in(key, index)
    pick_key, y_key, x_key = jax.random.split(rng, 3)
    picks = jax.random.randint(pick_key, (BATCH,), 0, data.shape[0])
    # Even offsets: the patch keeps the image's 2x2 block grid, as generation sees it.
    top = jax.random.randint(y_key, (), 0, data.shape[1] - patch + 1) // 2 * 2
    left = jax.random.randint(x_key, (), 0, data.shape[2] - patch + 1) // 2 * 2
    batch = jax.lax.dynamic_slice(data[picks], (0, top, left, 0), (BATCH, patch, patch, 3))

    def loss_fn(p):
      error = model.apply({'params': p}, batch) - batch
      return jnp.abs(error).mean() if loss_kind == 'l1' else jnp.square(error).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return model, optimizer, step


def train_generator(architecture: str, targets: np.ndarray, seed: int, steps: int,
                    learning_rate: float = 3e-3, *, loss_kind: str = 'l1', width: float = 1.0,
                    init_params=None):
  """Trains one auto-encoder to reconstruct `targets` (L1, or L2, on random 32 px patches);
  from `init_params` when given (training further, fine-tuning), else from `seed`."""
  if loss_kind not in ('l1', 'l2'):
    raise ValueError(f'unknown generator loss {loss_kind!r}; use "l1" or "l2".')
  patch = min(PATCH, targets.shape[1])
  model, optimizer, step = _training_step(architecture, width, loss_kind, learning_rate, steps,
                                          patch)
  key = jax.random.key(seed)
  params = (model.init(key, jnp.zeros((1, patch, patch, 3)))['params'] if init_params is None
            else init_params)
  opt_state = optimizer.init(params)
  data = to_unit(targets)
  for index in range(steps):
    params, opt_state, _ = step(params, opt_state, data, key, index)
  return params


@functools.lru_cache(maxsize=None)
def _reconstruction(architecture: str, width: float):
  model = ReconstructingGenerator(architecture, width)
  return jax.jit(lambda params, x: model.apply({'params': params}, x))


def reconstruct(architecture: str, params, inputs: np.ndarray, batch_size: int = 50,
                width: float = 1.0) -> np.ndarray:
  """Real crops [N, S, S, 3] uint8 -> the generator's reconstructions, uint8."""
  apply = _reconstruction(architecture, width)
  out = []
  for start in range(0, len(inputs), batch_size):
    fake = apply(params, to_unit(inputs[start:start + batch_size]))
    out.append(np.asarray(jnp.clip(jnp.round((fake + 1) * 127.5), 0, 255).astype(jnp.uint8)))
  return np.concatenate(out) if out else np.zeros((0, *inputs.shape[1:]), np.uint8)


# Every generator trains from seed * 100 + offset + its architecture's index (< 4): the offsets
# of the test generators (main, cross-seed and variants) and of the extra training seeds of the
# `multiseed` configs (up to 8 seeds) are 5 apart, so no training seed is a test seed
# (tests/test_input_pipeline.py checks it).
TEST_SEED_OFFSETS = {'main': 0, 'cross_seed': 50, 'trained_further': 20, 'finetuned': 25,
                     'retrained_l2': 30, 'wider': 35, 'unseen_seed_1': 60, 'unseen_seed_2': 70,
                     'unseen_seed_3': 80, 'unseen_architecture': 90}
TRAINING_SEED_OFFSETS = (40, 45, 5, 10, 15, 55, 65)


def generator_seed(seed: int, offset: int | str, index: int) -> int:
  """The seed of architecture `index`'s generator at `offset` (a TEST_SEED_OFFSETS name or a
  TRAINING_SEED_OFFSETS value) in a dataset built from `seed`."""
  return seed * 100 + (TEST_SEED_OFFSETS[offset] if isinstance(offset, str) else offset) + index


def generate_sources(size: int, per_source: int, cross_seed_count: int, train_steps: int,
                     seed: int, training_count: int, log=print,
                     trained_params: dict | None = None, training_seeds: int = 1,
                     mixed_count: int = 0) -> tuple[dict, dict, dict]:
  """-> ({'real': crops, arch: reconstructions of those crops, ...},
         {arch: a second seed's reconstructions of the last `cross_seed_count` crops},
         {arch: PSNR in dB of the main generator against its inputs}); deterministic in `seed`.

  Generators train on the first `training_count` crops (the training split), so the test
  crops are reconstructed by networks that never saw them. trained_params: filled with each
  architecture's main generator (what `generate_variants` trains further and fine-tunes).

  training_seeds > 1: that many generators per architecture (the main one and
  TRAINING_SEED_OFFSETS' seeds), and crop i < `mixed_count` (the training and validation
  crops) is reconstructed by generator i mod training_seeds, so a head sees one architecture
  under several weights; the later (test) crops keep the main generator's.
  """
  if not 1 <= training_seeds <= 1 + len(TRAINING_SEED_OFFSETS):
    raise ValueError(f'training_seeds={training_seeds}: 1 to {1 + len(TRAINING_SEED_OFFSETS)}')
  start = time.time()
  photos = load_bundled_photos()
  rng = np.random.default_rng(seed)
  real = random_crops(photos, per_source, size, rng)
  sources, cross_seed, fidelity = {'real': real}, {}, {}
  for index, architecture in enumerate(ARCHITECTURES):
    params = train_generator(architecture, real[:training_count],
                             generator_seed(seed, 'main', index), train_steps)
    sources[architecture] = reconstruct(architecture, params, real)
    if trained_params is not None:
      trained_params[architecture] = params
    fidelity[architecture] = psnr(sources[architecture], real)
    log(f'  generator {architecture}: PSNR {fidelity[architecture]:.1f} dB against its inputs '
        f'after {train_steps} steps ({time.time() - start:.0f}s)')
    for k, offset in enumerate(TRAINING_SEED_OFFSETS[:training_seeds - 1], start=1):
      params = train_generator(architecture, real[:training_count],
                               generator_seed(seed, offset, index), train_steps)
      chosen = np.arange(k, mixed_count, training_seeds)
      sources[architecture][chosen] = reconstruct(architecture, params, real[chosen])
      name = f'{architecture}.training_seed_{k + 1}'
      fidelity[name] = psnr(sources[architecture][chosen], real[chosen])
      log(f'  generator {name}: PSNR {fidelity[name]:.1f} dB on its {len(chosen)} crops '
          f'({time.time() - start:.0f}s)')
    if cross_seed_count:
      params = train_generator(architecture, real[:training_count],
                               generator_seed(seed, 'cross_seed', index), train_steps)
      cross_seed[architecture] = reconstruct(architecture, params, real[-cross_seed_count:])
      log(f'  generator {architecture}, second seed: PSNR '
          f'{psnr(cross_seed[architecture], real[-cross_seed_count:]):.1f} dB '
          f'({time.time() - start:.0f}s)')
  return sources, cross_seed, fidelity


# Generator variants (the `variants` builder config): DNA-Det's and GTA-Net's question, does a head
# know the architecture or only the weights it was trained against? Split -> how each
# architecture's variant generator is made; every variant reconstructs the last test crops.
UNSEEN_SEEDS = 3
UNSEEN_ARCHITECTURES = ('cubic', 'lanczos3')  # jax.image.resize upsamplers no head is trained on
VARIANT_SPLITS = {
    'test_unseen_seeds': f'{UNSEEN_SEEDS} more seeds, trained as the main generator',
    'test_trained_further': 'the main generator trained for as many steps again (lr 1e-3)',
    'test_finetuned': 'the main generator fine-tuned on other content (half the steps, lr 1e-3, '
                      'on 64 px DCGAN faces)',
    'test_retrained_l2': 'retrained from another seed with an L2 loss instead of L1',
    'test_wider': 'retrained from another seed with 1.5x the channels',
    'test_unseen_architectures': 'architectures no head is trained on: '
                                 + ', '.join(UNSEEN_ARCHITECTURES) + ' upsamplers',
}


def generate_variants(real: np.ndarray, training_count: int, test_count: int,
                      main_params: dict, other_content: np.ndarray, train_steps: int, seed: int,
                      log=print) -> tuple[dict, dict]:
  """-> ({split: {'<architecture>.<variant>' (or an unseen architecture): uint8 images}},
         {the same source names: PSNR in dB}); each variant reconstructs the last `test_count`
  crops of `real`, trains on its first `training_count`; deterministic in `seed`."""
  start = time.time()
  targets, inputs = real[:training_count], real[-test_count:]
  splits = {name: {} for name in VARIANT_SPLITS}
  fidelity = {}

  def add(split, name, architecture, params, width=1.0):
    images = reconstruct(architecture, params, inputs, width=width)
    splits[split][name] = images
    fidelity[name] = psnr(images, inputs)
    log(f'  variant {name}: PSNR {fidelity[name]:.1f} dB ({time.time() - start:.0f}s)')

  for index, architecture in enumerate(ARCHITECTURES):
    for j in range(UNSEEN_SEEDS):
      params = train_generator(architecture, targets,
                               generator_seed(seed, f'unseen_seed_{j + 1}', index), train_steps)
      add('test_unseen_seeds', f'{architecture}.unseen_seed_{j + 1}', architecture, params)
    params = train_generator(architecture, targets, generator_seed(seed, 'trained_further', index),
                             train_steps, 1e-3, init_params=main_params[architecture])
    add('test_trained_further', f'{architecture}.trained_further', architecture, params)
    params = train_generator(architecture, other_content, generator_seed(seed, 'finetuned', index),
                             max(train_steps // 2, 1), 1e-3, init_params=main_params[architecture])
    add('test_finetuned', f'{architecture}.finetuned', architecture, params)
    params = train_generator(architecture, targets, generator_seed(seed, 'retrained_l2', index),
                             train_steps, loss_kind='l2')
    add('test_retrained_l2', f'{architecture}.retrained_l2', architecture, params)
    params = train_generator(architecture, targets, generator_seed(seed, 'wider', index),
                             train_steps, width=1.5)
    add('test_wider', f'{architecture}.wider', architecture, params, width=1.5)
  for index, architecture in enumerate(UNSEEN_ARCHITECTURES):
    params = train_generator(architecture, targets,
                             generator_seed(seed, 'unseen_architecture', index), train_steps)
    add('test_unseen_architectures', architecture, architecture, params)
  return splits, fidelity
