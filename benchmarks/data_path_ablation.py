"""Issue 43's ablation of the device data path: the device path's own draws, with chosen operations
computed on the host by the host path's functions (OpenCV, PIL, numpy) instead of their JAX
versions. Which operation, if any, carries the device path's lower figures on the built-in data
(docs/research/2026-12-07-device-data-path.md)?

GTA_ABLATION_HOST_OPS names the operations the host computes (comma-separated, or `all`):
blur, crop, jpeg, noise (the perturbations), soften, jitter (the widenings). Everything else,
including every draw, the epoch's order and the training step, is the device path's.

  # a phase on the device path with every operation on the host
  GTA_ABLATION_HOST_OPS=all python benchmarks/data_path_ablation.py \\
      --config=configs/phase2_synthetic.py --config.data.augment_on=device ...   (launch.py's flags)
  # the operations alone: device and host versions on the same draws, per kind
  python benchmarks/data_path_ablation.py --check --images 1024 --seed 5
  # one epoch of training batches on both paths: same records, draws aligned with their images
  python benchmarks/data_path_ablation.py --align --seed 5 --epoch 2

Not part of the package: an experiment's instrument (its note keeps the evidence).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from gta_jax.data import augment
from gta_jax.data import augment_jax
from gta_jax.data import jpeg_jax

OPS = ('blur', 'crop', 'jpeg', 'noise', 'soften', 'jitter')


def _callback(host_fn, images, *params):
  """images uint8 [N, H, W, C] and per-image parameters -> host_fn(image, *its parameters), image
  by image, on the host."""
  def run(images, *params):
    images = np.asarray(images)
    n = images.shape[0]
    params = [np.asarray(p) if np.ndim(p) and np.shape(p)[0] == n
              else np.broadcast_to(np.asarray(p), (n,) + np.shape(p)) for p in params]
    return np.stack([np.asarray(host_fn(images[i], *(p[i] for p in params)), np.uint8)
                     for i in range(n)])
  return jax.pure_callback(run, jax.ShapeDtypeStruct(images.shape, jnp.uint8), images, *params,
                           vmap_method='sequential')


def _host_blur(images, kernel, sigma=None):
  return _callback(lambda im, k: augment.blur(im, int(k), sigma), images, kernel)


def _host_crop(images, fraction, split_y, split_x):
  return _callback(lambda im, f, y, x: augment.crop(im, float(f), float(y), float(x)),
                   images, fraction, split_y, split_x)


def _host_jpeg(images, quality):
  return _callback(lambda im, q: augment.jpeg(im, int(q)), images, quality)


def _host_noise(images, std, key):
  data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  data = data.reshape((-1, data.shape[-1]))
  return _callback(lambda im, s, k: augment.noise(im, float(s), np.random.default_rng(
      [int(v) for v in k])), images, std, data)


def _host_soften(images, sigma):
  return _callback(lambda im, s: augment.gaussian_blur(im, float(s)), images, sigma)


def _host_jitter(images, saturation, contrast, brightness, gamma):
  return _callback(lambda im, s, c, b, g: augment.apply_photometric_jitter(
      im, float(s), float(c), float(b), float(g)), images, saturation, contrast, brightness, gamma)


_PATCHES = {
    'blur': (augment_jax, 'gaussian_blur', _host_blur),
    'crop': (augment_jax, 'crop_resize', _host_crop),
    'jpeg': (jpeg_jax, 'jpeg_roundtrip', _host_jpeg),
    'noise': (augment_jax, 'gaussian_noise', _host_noise),
    'soften': (augment_jax, 'soften', _host_soften),
    'jitter': (augment_jax, 'photometric_jitter', _host_jitter),
}


def parse(names: str) -> tuple[str, ...]:
  names = tuple(n for n in names.replace(' ', '').split(',') if n)
  if names == ('all',):
    return OPS
  unknown = [n for n in names if n not in OPS]
  if unknown:
    raise SystemExit(f'GTA_ABLATION_HOST_OPS: unknown {unknown}; choose from {", ".join(OPS)} '
                     'or all')
  return names


@contextlib.contextmanager
def _patched(replacements):
  """Within: each (module, attribute, replacement) set, and device_path's traced augmentation
  dropped (device_path looks the functions up on their modules when it traces); restored after."""
  from gta_jax.data import device_path
  saved = [(module, attribute, getattr(module, attribute))
           for module, attribute, _ in replacements]
  for module, attribute, replacement in replacements:
    setattr(module, attribute, replacement)
  device_path._augment_fn.cache_clear()
  try:
    yield
  finally:
    for module, attribute, original in saved:
      setattr(module, attribute, original)
    device_path._augment_fn.cache_clear()


def host_ops(names):
  """Within: device_path's operations `names` run on the host."""
  return _patched([_PATCHES[name] for name in names])


class _Positions:
  """An image's position in its epoch from its index in the split, as the host path keys its
  draws: `remember` wraps device_path.batches to note the split's size and content groups."""

  def __init__(self):
    from gta_jax.data import device_path
    self._batches, self._inverse = device_path.batches, {}
    self.size = self.groups = None

  def remember(self, split, batch_size, **kwargs):
    self.size, self.groups = len(split), kwargs.get('groups')
    return self._batches(split, batch_size, **kwargs)

  def __call__(self, seed: int, epoch: int, index: int) -> int:
    if (seed, epoch) not in self._inverse:
      from gta_jax.data import pipeline
      order = pipeline.epoch_order(self.size, seed, epoch, self.groups)
      self._inverse[seed, epoch] = np.empty(self.size, np.int64)
      self._inverse[seed, epoch][order] = np.arange(self.size)
    return int(self._inverse[seed, epoch][int(index)])


def host_augmentation():
  """Within: the device path's batches are augmented by the host path's own per-image function
  (augment.Widening.apply, then augment.augment_recorded with the host's generator of (seed,
  epoch, position in the epoch)), called back from its jitted function. Everything else is the
  device path's: the split in memory, the order, the batching, the prefetch, the step's inputs. If
  the device path's machinery is the host path's, a run then trains exactly as on the host."""
  from gta_jax.data import device_path
  position_of = _Positions()

  def augment_batch(images, index, group, label, seed, epoch, *, mode, options, widening,
                    strategy='select'):
    del strategy

    def run(images, index, group, label, seed, epoch):
      # the arguments as numpy (jax arrays here would dispatch from XLA's callback thread: a hang)
      images, index, group, label = (np.asarray(a) for a in (images, index, group, label))
      seed, epoch = int(np.asarray(seed)), int(np.asarray(epoch))
      out, bits = np.empty_like(images), np.zeros(len(index), np.uint8)
      for i, (image, at) in enumerate(zip(images, index)):
        position = position_of(seed, epoch, at)
        image = widening.apply(image, int(label[i]), seed=seed, epoch=epoch, position=position,
                               group=int(group[i]))
        if mode != 'clean':
          image, bits[i] = augment.augment_recorded(
              image, mode, augment.example_rng(seed, epoch, position), options)
        out[i] = image
      return out, bits
    return jax.pure_callback(
        run, (jax.ShapeDtypeStruct(images.shape, jnp.uint8),
              jax.ShapeDtypeStruct(images.shape[:1], jnp.uint8)),
        images, index, group, label, seed, epoch, vmap_method='sequential')

  return _patched([(device_path, 'batches', position_of.remember),
                   (device_path, 'augment_batch', augment_batch)])


def host_draws(jax_noise: bool = False):
  """Within: the device path's draws are the host path's own numbers (augment.py's generators of
  (seed, epoch, position in the epoch) and (seed, epoch, content group), drawn in the host's
  order), called back from its jitted function; the operations stay the JAX ones, except the
  noise, which the host draws from the same generator as its other parameters (so the noise, too,
  is the host's; `jax_noise`: the noise field drawn by JAX instead, from a key of (seed, epoch,
  position)). `one` and `clean` only (the built-in recipe's phases)."""
  from gta_jax.data import device_path
  original_draws, position_of = device_path.draws, _Positions()
  noise_variance = []  # the run's options.noise_variance, for the noise callback

  def draws(seed, epoch, index, group, label, *, mode, options, widening):
    if mode not in ('one', 'clean'):
      raise ValueError(f'host_draws: mode {mode!r} (one or clean only)')
    noise_variance[:] = [options.noise_variance]
    template = jax.eval_shape(lambda: original_draws(
        seed, epoch, index, group, label, mode=mode, options=options, widening=widening))
    template.pop('noise_key', None)
    names = sorted(template)
    n = index.shape[0]

    def run(seed, epoch, index, group, label):
      seed, epoch = int(np.asarray(seed)), int(np.asarray(epoch))
      index, group, label = np.asarray(index), np.asarray(group), np.asarray(label)
      out = {name: np.zeros(template[name].shape, template[name].dtype) for name in names}
      noise_key = np.zeros((n, 2 if jax_noise else 3), np.uint32)
      low, high = np.log(augment.SOFTENING_SIGMA[0]), np.log(augment.SOFTENING_SIGMA[1])
      for i in range(n):
        position = position_of(seed, epoch, index[i])
        if widening.real_softening and label[i] == 0:
          rng = augment.softening_rng(seed, epoch, position)
          if rng.uniform() < widening.real_softening:
            out['soften'][i], out['sigma'][i] = True, np.exp(rng.uniform(low, high))
        if widening.photometric_jitter:
          rng = augment.jitter_rng(seed, epoch, int(group[i]))
          if rng.uniform() < widening.photometric_jitter:
            out['jitter'][i] = True
            (out['saturation'][i], out['contrast'][i], out['brightness'][i],
             out['gamma'][i]) = augment.jitter_factors(rng)
        if mode == 'one':
          rng = augment.example_rng(seed, epoch, position)
          choice = int(rng.integers(len(augment.KINDS) + 1))
          kind = augment.KINDS[choice] if choice < len(augment.KINDS) else None
          if kind:
            out[kind][i] = True
          if kind == 'blur':
            out['kernel'][i] = int(rng.choice(augment.BLUR_KERNELS))
          elif kind == 'crop':
            out['fraction'][i] = rng.uniform(0.05, 0.2)
            out['split_y'][i], out['split_x'][i] = rng.uniform(), rng.uniform()
          elif kind == 'jpeg':
            out['quality'][i] = int(rng.integers(10, 76))
          elif kind == 'noise':
            drawn = rng.uniform(5, 20)
            out['std'][i] = np.sqrt(drawn) if options.noise_variance else drawn
          noise_key[i] = ((seed << 16) + epoch, position) if jax_noise else (seed, epoch, position)
      return [out[name] for name in names] + [noise_key]
    values = jax.pure_callback(
        run, [jax.ShapeDtypeStruct(template[name].shape, template[name].dtype) for name in names]
        + [jax.ShapeDtypeStruct((n, 2 if jax_noise else 3), jnp.uint32)], seed, epoch, index,
        group, label, vmap_method='sequential')
    return dict(zip(names, values[:-1])) | ({'noise_key': values[-1]} if mode == 'one' else {})

  def noise(images, std, key):
    del std  # float32; the host's is the float64 it draws, drawn again below

    def run(images, key):
      images, key = np.asarray(images), np.asarray(key)
      out = np.empty_like(images)
      for i in range(len(images)):
        rng = augment.example_rng(*(int(v) for v in key[i]))
        rng.integers(len(augment.KINDS) + 1)  # the draws before the noise, as the host's
        drawn = rng.uniform(5, 20)
        out[i] = augment.noise(images[i], np.sqrt(drawn) if noise_variance[0] else drawn, rng)
      return out
    return jax.pure_callback(run, jax.ShapeDtypeStruct(images.shape, jnp.uint8), images, key,
                             vmap_method='sequential')

  return _patched([(device_path, 'batches', position_of.remember),
                   (device_path, 'draws', draws)]
                  + ([] if jax_noise else [(augment_jax, 'gaussian_noise', noise)]))


def check(images: int, seed: int, data_dir: str) -> dict:
  """Device and host operations on the same draws (phase II's: `one`, softening and jitter 0.5)
  over the first `images` training images, per operation alone: the share of pixels that differ
  and by how much, and the checkerboard (Nyquist) energy each leaves, which is tconv's
  fingerprint."""
  from gta_jax.data import device_path
  from gta_jax.data import pipeline
  builder = pipeline.load_builder(pipeline.BUILTIN, 'default', data_dir)
  source = pipeline.data_source(builder, 'train')
  split = np.stack([np.asarray(source[i]['image']) for i in range(images)])
  labels = np.array([int(source[i]['label']) for i in range(images)], np.int32)
  sources = np.array([int(source[i]['source_id']) for i in range(images)], np.int32)
  groups = np.array([int(source[i]['index']) for i in range(images)], np.int32)
  widening = augment.Widening(0.5, 0.5)
  index = jnp.arange(images, dtype=jnp.int32)
  d = device_path.draws(seed, 0, index, jnp.asarray(groups), jnp.asarray(labels), mode='one',
                        options=augment.Options(), widening=widening)
  calls = {
      'blur': lambda x: augment_jax.gaussian_blur(x, d['kernel']),
      'crop': lambda x: augment_jax.crop_resize(x, d['fraction'], d['split_y'], d['split_x']),
      'jpeg': lambda x: jpeg_jax.jpeg_roundtrip(x, d['quality']),
      'noise': lambda x: augment_jax.gaussian_noise(x, d['std'], d['noise_key']),
      'soften': lambda x: augment_jax.soften(x, d['sigma']),
      'jitter': lambda x: augment_jax.photometric_jitter(
          x, d['saturation'], d['contrast'], d['brightness'], d['gamma']),
  }

  def nyquist(x):  # per image: mean |checkerboard component| of the luma-like channel mean
    y = np.asarray(x, np.float64).mean(-1)
    sign = (-1.0) ** (np.arange(y.shape[1])[:, None] + np.arange(y.shape[2])[None, :])
    return np.abs((y * sign).mean((1, 2)))

  report = {'images': images, 'seed': seed}
  for name, call in calls.items():
    device = np.asarray(call(jnp.asarray(split)))
    with host_ops([name]):
      host = np.asarray(call(jnp.asarray(split)))
    diff = np.abs(device.astype(np.int32) - host.astype(np.int32))
    entry = {'pixels_differing': float((diff > 0).mean()), 'max_level': int(diff.max()),
             'mean_signed_level': float((device.astype(np.float64) - host).mean())}
    if name != 'noise':  # noise: different generators, compare in distribution
      nd, nh = nyquist(device), nyquist(host)
      for cls, mask in (('real', sources == 0), ('tconv', sources == 1)):
        entry[f'nyquist_{cls}_device_over_host'] = float(nd[mask].mean() / nh[mask].mean())
    else:
      entry['noise_std_device'] = float((device.astype(np.float64) - split).std())
      entry['noise_std_host'] = float((host.astype(np.float64) - split).std())
    report[name] = entry
    print(name, json.dumps(entry), flush=True)
  return report


def align(seed: int, epoch: int, batch_size: int, data_dir: str) -> dict:
  """One epoch of training batches on both paths (phase II's settings): the same records in the
  same order; on the device path every image without a draw unchanged and every image with one
  changed (draws aligned with their images); how often each kind was applied on each path."""
  import ml_collections
  from gta_jax.data import device_path
  from gta_jax.data import loader
  from gta_jax.data import pipeline
  data = ml_collections.ConfigDict(dict(
      name=pipeline.BUILTIN, config='default', data_dir=data_dir, release_blur_sigma=False,
      noise_variance=False, real_softening=0.5, photometric_jitter=0.5, augment_on='host'))
  dataset = loader.open_dataset(data, 'pixel')
  source, groups = dataset.source('train'), dataset.content_groups('train')
  split = device_path.load_split(source, 1e12)
  widening = augment.Widening(0.5, 0.5)
  order = pipeline.epoch_order(len(split), seed, epoch, groups)
  device = device_path.batches(split, batch_size, seed=seed, epoch=epoch, mode='one',
                               label_view=lambda b: b['label'], groups=groups, widening=widening)
  host = dataset.batches('train', batch_size, mode='one', seed=seed, epoch=epoch, shuffle=True,
                         drop_remainder=True)
  report = dict(seed=seed, epoch=epoch, batches=0, images=0, same_records=True, misaligned=0,
                kinds_device=[0] * 4, kinds_host=[0] * 4)
  for b, ((on_device, _), on_host) in enumerate(zip(device, host)):
    index = order[b * batch_size:(b + 1) * batch_size]
    report['same_records'] &= bool(
        (np.asarray(on_device['source_id']) == on_host['source_id']).all()
        and (np.asarray(on_device['label']) == on_host['label']).all())
    d = device_path.draws(seed, epoch, jnp.asarray(index, jnp.int32),
                          jnp.asarray(split.group[index]), jnp.asarray(split.label[index]),
                          mode='one', options=augment.Options(), widening=widening)
    drawn = np.zeros(len(index), bool)
    for name in ('soften', 'jitter') + augment.KINDS:
      drawn |= np.asarray(d[name])
    unchanged = (np.asarray(on_device['image']) == np.asarray(split.images[index])).all((1, 2, 3))
    report['misaligned'] += int((unchanged == drawn).sum())
    for k in range(len(augment.KINDS)):
      report['kinds_device'][k] += int((np.asarray(on_device['perturbations']) >> k & 1).sum())
      report['kinds_host'][k] += int((on_host['perturbations'] >> k & 1).sum())
    report['batches'] += 1
    report['images'] += len(index)
  print(json.dumps(report), flush=True)
  return report


def main():
  if '--check' in sys.argv or '--align' in sys.argv:
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument('--check', action='store_true')
    parser.add_argument('--align', action='store_true')
    parser.add_argument('--epoch', type=int, default=2)
    parser.add_argument('--batch_size', type=int, default=32)
    parser.add_argument('--images', type=int, default=512)
    parser.add_argument('--seed', type=int, default=5)
    parser.add_argument('--data_dir', default=os.path.expanduser('~/tensorflow_datasets'))
    parser.add_argument('--out', default=None)
    args = parser.parse_args()
    report = (align(args.seed, args.epoch, args.batch_size, args.data_dir) if args.align
              else check(args.images, args.seed, args.data_dir))
    if args.out:
      with open(args.out, 'w') as f:
        json.dump(report, f, indent=1)
    return
  import pathlib
  import runpy
  # launch.py as its own command line, in this process, so the patches below apply to it
  launch = lambda: runpy.run_path(str(pathlib.Path(__file__).resolve().parents[1] / 'launch.py'),
                                  run_name='__main__')
  if os.environ.get('GTA_ABLATION_HOST_AUGMENTATION') == '1':
    print('data_path_ablation: the device path with the host path\'s augmentation', flush=True)
    with host_augmentation():
      launch()
    return
  if os.environ.get('GTA_ABLATION_HOST_DRAWS') == '1':
    jax_noise = os.environ.get('GTA_ABLATION_JAX_NOISE') == '1'
    print('data_path_ablation: the device path with the host path\'s draws'
          + (' (the noise field drawn by JAX)' if jax_noise else ''), flush=True)
    with host_draws(jax_noise):
      launch()
    return
  names = parse(os.environ.get('GTA_ABLATION_HOST_OPS', ''))
  print(f'data_path_ablation: host computes {", ".join(names) or "nothing"}', flush=True)
  with host_ops(names):
    launch()


if __name__ == '__main__':
  main()
