"""The device data path (config.data.augment_on='device'): training batches augmented on the
accelerator instead of by host CPUs.

The decoded uint8 training split is read once into memory: into device memory when it fits
`config.data.device_cache_gb` (then a batch is a gather on the device), else into host memory, each
batch's rows copied to the device a few batches ahead. Each batch then goes through one jitted
function that applies what the host path applies (augment.py: the widenings of config.data, then
the mode's perturbations) with the JAX versions of each operation (augment_jax.py, jpeg_jax.py),
so the host only indexes arrays.

Draws. Every draw of an image comes from a key folded from (seed, the data path's branch, epoch,
index in the split) (softening and perturbations) or (seed, branch, epoch, content group)
(photometric jitter, shared by a crop and its fakes as on the host), so an image's augmentation
does not depend on its batch, its position or the process that reads it, and a resumed run sees
exactly the same batches. The draws
follow the host's distributions (augment.py); they are not the host's numbers (another
generator). The epoch's order is the host path's own (`pipeline.epoch_order`), so with nothing to draw
both paths give identical batches (tested).

Two ways to apply the same draws, equal image for image (tested): `select` computes every
operation the mode can apply on the whole batch and keeps each image's own (static shapes, what
an accelerator wants); `switch` runs each image through only the operations drawn for it
(`lax.map` + `lax.cond`: on a CPU, where XLA runs one branch, about a fifth of the work in `one`
mode). The default is `select` on an accelerator and `switch` on the CPU.

Evaluation never uses this path: validation and the test sets are drawn on the host with their
fixed seeds, so they are the same images whichever path trains.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from gta_jax import errors
from gta_jax.data import augment
from gta_jax.data import augment_jax
from gta_jax.data import jpeg_jax
from gta_jax.data import pipeline
from gta_jax.io import distributed
from gta_jax.io.writers import log

AUGMENT_ON = ('auto', 'host', 'device')
STRATEGIES = ('select', 'switch')
# Streams folded into an example's key after (seed, epoch, index or group): each kind of draw has
# its own, so turning a widening on leaves the perturbations' draws unchanged (as on the host).
_PERTURB, _SOFTEN, _JITTER = 0, 1, 2
# The data path's own branch of the seed's key, folded in before the epoch. Without it, epoch 1's
# keys were fold_in(fold_in(key(seed), 1), index), the very keys the training steps fold from the
# seed for step number `index` (the heads' patch windows, DNA-Det's crops and dropout: fold_in(
# key(seed), 1) then the step; jax's split(k)[i] is fold_in(k, i)), so an image's draws and a
# step's windows came from one key.
_DATA_BRANCH = 0x61756764  # 'augd'


def resolve(augment_on: str, backend: str | None = None) -> str:
  """config.data.augment_on -> 'host' or 'device'. 'auto': the device on an accelerator; the host
  on a CPU, where the device path is the faster but the figures it trains are not yet shown to
  equal the host path's (docs/data_path.md, benchmarks/data_path.py)."""
  if augment_on not in AUGMENT_ON:
    raise errors.ConfigError(f'config.data.augment_on={augment_on!r}: choose one of '
                             f'{", ".join(AUGMENT_ON)}.')
  if augment_on != 'auto':
    return augment_on
  return 'host' if (backend or jax.default_backend()) == 'cpu' else 'device'


def default_strategy(backend: str | None = None) -> str:
  return 'switch' if (backend or jax.default_backend()) == 'cpu' else 'select'


# ---------------------------------------------------------------------------------------- draws


def _log_uniform(key, bounds):
  low, high = np.log(bounds[0]), np.log(bounds[1])
  return jnp.exp(jax.random.uniform(key, (), jnp.float32, low, high))


def _draw_one(perturb_key, soften_key, jitter_key, label, *, mode: str,
              options: augment.Options, widening: augment.Widening) -> dict:
  """One image's draws (scalars), in augment.py's distributions."""
  draws = {}
  if widening.real_softening:
    k_apply, k_sigma = jax.random.split(soften_key)
    draws['soften'] = (label == 0) & (jax.random.uniform(k_apply) < widening.real_softening)
    draws['sigma'] = _log_uniform(k_sigma, augment.SOFTENING_SIGMA)
  if widening.photometric_jitter:
    k = jax.random.split(jitter_key, 6)
    draws['jitter'] = jax.random.uniform(k[0]) < widening.photometric_jitter
    grey = jax.random.uniform(k[1]) < augment.JITTER_GREY_SHARE
    draws['saturation'] = jnp.where(grey, 0.0, _log_uniform(k[2], augment.JITTER_SATURATION))
    draws['contrast'] = _log_uniform(k[3], augment.JITTER_CONTRAST)
    draws['brightness'] = jax.random.uniform(k[4], (), jnp.float32, -augment.JITTER_BRIGHTNESS,
                                             augment.JITTER_BRIGHTNESS)
    draws['gamma'] = _log_uniform(k[5], augment.JITTER_GAMMA)
  kinds = augment.kinds_of(mode)
  if not kinds:
    return draws
  k = jax.random.split(perturb_key, 10)
  if mode == 'multi':    # each with p 1/2
    chosen = jax.random.uniform(k[0], (len(augment.KINDS),)) < 0.5
  elif mode == 'one':    # none or one, p 1/5 each
    chosen = jax.random.randint(k[0], (), 0, len(augment.KINDS) + 1) == jnp.arange(len(augment.KINDS))
  else:                  # the mode's kind on half of the images
    chosen = (jax.random.uniform(k[0]) < 0.5) & (jnp.arange(len(augment.KINDS))
                                                  == augment.KIND_BITS[mode])
  for kind in kinds:
    draws[kind] = chosen[augment.KIND_BITS[kind]]
  if 'blur' in kinds:
    draws['kernel'] = jnp.asarray(augment.BLUR_KERNELS)[jax.random.randint(k[1], (), 0, 4)]
  if 'crop' in kinds:
    draws['fraction'] = jax.random.uniform(k[2], (), jnp.float32, 0.05, 0.2)
    draws['split_y'] = jax.random.uniform(k[3])
    draws['split_x'] = jax.random.uniform(k[4])
  if 'jpeg' in kinds:
    draws['quality'] = jax.random.randint(k[5], (), 10, 76)
  if 'noise' in kinds:
    std = jax.random.uniform(k[6], (), jnp.float32, 5.0, 20.0)
    draws['std'] = jnp.sqrt(std) if options.noise_variance else std
    draws['noise_key'] = k[7]
  return draws


def draws(seed, epoch, index, group, label, *, mode: str, options: augment.Options,
          widening: augment.Widening) -> dict:
  """Per-image draws [N] for the images at `index` (in the split) of content `group` (the jitter's
  key, as augment.jitter_rng) and `label` in epoch `epoch` of a run with `seed` (traced)."""
  return jax.vmap(functools.partial(_draw_one, mode=mode, options=options, widening=widening))(
      *image_keys(seed, epoch, index, group), label)


def image_keys(seed, epoch, index, group):
  """The keys of the images at `index` (content `group`) in epoch `epoch` of a run with `seed`:
  (perturbations, softening, jitter), each [N]."""
  epoch_key = jax.random.fold_in(
      jax.random.fold_in(jax.random.key(seed), _DATA_BRANCH), epoch)
  stream = lambda ids, tag: jax.vmap(
      lambda i: jax.random.fold_in(jax.random.fold_in(epoch_key, i), tag))(ids)
  return stream(index, _PERTURB), stream(index, _SOFTEN), stream(group, _JITTER)


# ---------------------------------------------------------------------------------------- apply


def _select(flag, fn, images):
  return jnp.where(flag[:, None, None, None], fn(images), images)


def _switch(flag, fn, images):  # one image ([1, H, W, C]), one flag ([1])
  return jax.lax.cond(flag[0], fn, lambda x: x, images)


def apply(images, d: dict, *, mode: str, options: augment.Options,
          widening: augment.Widening, choose=_select):
  """uint8 [N, H, W, C] and their draws -> (augmented uint8 [N, H, W, C], perturbation bits [N]
  uint8 as augment.augment_recorded records them). `choose(flag, fn, images)` applies fn where
  flag holds: _select on a batch, _switch on one image."""
  if widening.real_softening:
    images = choose(d['soften'], lambda x: augment_jax.soften(x, d['sigma']), images)
  if widening.photometric_jitter:
    images = choose(d['jitter'], lambda x: augment_jax.photometric_jitter(
        x, d['saturation'], d['contrast'], d['brightness'], d['gamma']), images)
  operations = {
      'blur': lambda x: augment_jax.gaussian_blur(
          x, d['kernel'], 4.0 if options.release_blur_sigma else None),
      'crop': lambda x: augment_jax.crop_resize(x, d['fraction'], d['split_y'], d['split_x']),
      'jpeg': lambda x: jpeg_jax.jpeg_roundtrip(x, d['quality']),
      'noise': lambda x: augment_jax.gaussian_noise(x, d['std'], d['noise_key']),
  }
  bits = jnp.zeros(images.shape[:1], jnp.uint8)
  for kind in augment.kinds_of(mode):  # KINDS order: blur -> crop -> jpeg -> noise
    images = choose(d[kind], operations[kind], images)
    bits = bits | (d[kind].astype(jnp.uint8) << augment.KIND_BITS[kind])
  return images, bits


def augment_batch(images, index, group, label, seed, epoch, *, mode: str,
                  options: augment.Options, widening: augment.Widening,
                  strategy: str = 'select'):
  """A training batch's images (uint8 [N, H, W, C], the records at `index` of the split) augmented
  as the host path augments them (in distribution) -> (images, perturbation bits [N])."""
  d = draws(seed, epoch, index, group, label, mode=mode, options=options, widening=widening)
  settings = dict(mode=mode, options=options, widening=widening)
  if strategy == 'select':
    return apply(images, d, **settings)
  if strategy != 'switch':
    raise ValueError(f'strategy {strategy!r}: choose one of {", ".join(STRATEGIES)}')

  def one(args):
    image, drawn = args
    out, bits = apply(image[None], jax.tree.map(lambda v: v[None], drawn), choose=_switch,
                      **settings)
    return out[0], bits[0]
  return jax.lax.map(one, (images, d))


# ---------------------------------------------------------------------------------------- split


@dataclasses.dataclass
class Split:
  """A decoded split in memory: images uint8 [N, H, W, 3] on the devices (replicated: a batch is
  a gather there) or in host memory (numpy: each batch's rows are copied over), and per record
  its label, source id and content group."""
  images: jax.Array | np.ndarray
  label: np.ndarray
  source_id: np.ndarray
  group: np.ndarray          # the content group of each record (its `index` field), else -1
  on_device: bool

  def __len__(self):
    return len(self.label)


def available_memory_bytes() -> int | None:
  """The host memory available now (Linux's MemAvailable), None where it cannot be read."""
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


def load_split(source, budget_bytes: float, name: str = 'train') -> Split:
  """Reads every record of `source` (a split's random-access source) once -> Split, on the devices
  when its images take at most `budget_bytes`, else in host memory. A split that would not fit in
  the host memory available (it is read there first) is refused before reading, naming the
  config key."""
  size = len(source)
  first = np.asarray(source[0]['image'])
  needed, available = size * first.size, available_memory_bytes()
  if available is not None and needed > 0.8 * available:
    raise errors.ConfigError(
        f'config.data.augment_on=device: the {name} split\'s {size} images take '
        f'{needed / 2**30:.1f} GiB decoded, more than this machine can hold beside training '
        f'({available / 2**30:.1f} GiB of memory available); the device path reads the whole split '
        'into memory. Use --config.data.augment_on=host (it reads records as it goes).')
  images = np.empty((size,) + first.shape, np.uint8)
  label, source_id, group = (np.empty(size, np.int32) for _ in range(3))
  for i in range(size):
    record = source[i]
    image = np.asarray(record['image'])
    if image.shape != first.shape:
      raise errors.ConfigError(
          f'config.data.augment_on=device: {name} record {i} is an image of shape {image.shape}, '
          f'the split\'s first {first.shape}; the device path holds one size (use '
          '--config.data.augment_on=host).')
    images[i] = image
    label[i], source_id[i] = int(record['label']), int(record['source_id'])
    group[i] = int(record['index']) if 'index' in record else -1
  on_device = images.nbytes <= budget_bytes
  log(f'{name}: {size} images ({images.nbytes / 2**30:.2f} GiB) held '
      + ('in device memory' if on_device else
         f'in host memory (over config.data.device_cache_gb={budget_bytes / 2**30:g}), '
         'streamed to the device'))
  return Split(distributed.replicate(images) if on_device else images, label, source_id, group,
               on_device)


@functools.lru_cache(maxsize=16)
def _augment_fn(mode: str, options: augment.Options, widening: augment.Widening, strategy: str,
                gather: bool):
  def run(images, index, group, label, seed, epoch):
    if gather:
      images = images[index]
    return augment_batch(images, index, group, label, seed, epoch, mode=mode, options=options,
                         widening=widening, strategy=strategy)
  return jax.jit(run)


def ahead(items: Iterator, size: int) -> Iterator:
  """`items` evaluated `size` ahead of the consumer (dispatch is asynchronous: the copies and the
  augmentation of later batches overlap the step running on the device)."""
  queue = collections.deque()
  for item in items:
    queue.append(item)
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def batches(split: Split, batch_size: int, *, seed: int, epoch: int, mode: str,
            label_view: Callable[[dict], np.ndarray], groups: np.ndarray | None = None,
            start_batch: int = 0, options: augment.Options = augment.Options(),
            widening: augment.Widening = augment.Widening.NONE, strategy: str | None = None,
            prefetch: int = 2) -> Iterator[tuple[dict, jax.Array]]:
  """One training epoch of `split` from batch `start_batch` on -> (device batch, device labels
  `label_view(host batch)`), as loader.prefetch_to_device yields them for the host path: the same
  order (`groups`: the shuffle's content groups, None for a plain shuffle), full batches only,
  each process its rows of each global batch. Device batch: image, label, source_id, mask,
  perturbations (as the host's)."""
  strategy = strategy or default_strategy()
  order = pipeline.epoch_order(len(split), seed, epoch, groups)
  start, stop = distributed.process_rows(batch_size)
  run = _augment_fn(mode, options, widening, strategy, split.on_device)
  seed_epoch = distributed.replicate((np.int32(seed), np.int32(epoch)))

  def produce():
    for b in range(start_batch, len(split) // batch_size):
      index = order[b * batch_size:(b + 1) * batch_size][start:stop]
      position = np.arange(b * batch_size, (b + 1) * batch_size)[start:stop]
      # The jitter's group, as augment.Widening.apply: the record's content group, else its
      # position in the epoch.
      group = np.where(split.group[index] >= 0, split.group[index], position)
      host = {'label': split.label[index], 'source_id': split.source_id[index],
              'mask': np.ones(len(index), bool)}
      device = distributed.shard(host | {'index': index.astype(np.int32),
                                         'group': group.astype(np.int32)})
      images = split.images if split.on_device else distributed.shard(split.images[index])
      image, bits = run(images, device['index'], device['group'], device['label'], *seed_epoch)
      batch = {'image': image, 'label': device['label'], 'source_id': device['source_id'],
               'mask': device['mask'], 'perturbations': bits}
      yield batch, distributed.shard(label_view(host), batch_axis=-1)
  return ahead(produce(), prefetch)
