"""How much of each generator's trace survives the test perturbations (built-in data).

Each fake of the built-in data reconstructs a real crop, so `fake - real` is the generator's trace
on that crop. For every perturbation the same draw is applied to a real crop and to its fakes;
what is left of the trace is `P(fake) - P(real)`. Printed per source, averaged over crops:

- kept: energy of `P(fake) - P(real)` in the top octave of frequencies (max(|fx|, |fy|) > 0.25
  cycles per pixel, where an x2 upsampler leaves its pattern), as a share of the clean trace's.
  For a blur (linear) it is what is left of the trace; for JPEG it also counts the differences
  JPEG itself makes between the two images (so it can exceed 100%). Noise (the same draw on
  both) leaves the trace and masks it.
- kept by octave: the same share in each of the three top octaves, (0.25, 0.5], (0.125, 0.25] and
  (0.0625, 0.125] cycles per pixel: a blur is a low-pass filter, so what it leaves of a trace
  depends on where the trace's energy sits (an upsampler with more stages, as a GAN climbing
  through resolutions, leaves more of it lower down).
- below 10%: the share of crops that keep less than a tenth of their own trace's energy (for
  `multi` and `one`, whose draws differ from crop to crop).
- trace: the top-octave RMS of `P(fake) - P(real)`, in grey levels (`trace_rms_by_octave`: in
  each octave; under `clean`, the trace itself), beside
- change: the top-octave RMS of what the perturbation did to the real crop (the noise, JPEG's
  error, the detail a blur took away): the masking a model must see the trace through.
All on the channel mean (the trace is alike in the three channels, the noise is not).

Not a speed benchmark: the figures depend on the build alone (its version and digest are recorded).

python benchmarks/fingerprint_survival.py [--config default] [--split test] [--json OUT]
"""
import argparse
import collections
import functools
import json
import os
import pathlib

import numpy as np

from gta_jax.data import augment  # noqa: E402
from gta_jax.data import pipeline
from gta_jax.io import provenance

TOP_OCTAVE = 0.25  # cycles per pixel
# (name, lower, upper] bounds in cycles per pixel of max(|fy|, |fx|): the top three octaves.
OCTAVES = (('0.25-0.5', 0.25, 0.5), ('0.125-0.25', 0.125, 0.25), ('0.0625-0.125', 0.0625, 0.125))


@functools.cache
def _octave_masks(shape: tuple[int, int]) -> np.ndarray:
  """[len(OCTAVES), H, W] boolean masks of the FFT bins in each octave."""
  fy, fx = np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), indexing='ij')
  radius = np.maximum(abs(fy), abs(fx))
  return np.stack([(radius > lower) & (radius <= upper) for _, lower, upper in OCTAVES])


def octave_energies(difference: np.ndarray) -> np.ndarray:
  """[len(OCTAVES)] mean square of the channel-mean difference in each octave (Parseval); the
  first is the top octave (above TOP_OCTAVE)."""
  grey = difference.astype(np.float64).mean(-1)
  spectrum = np.abs(np.fft.fft2(grey)) ** 2 / grey.size ** 2
  return (_octave_masks(grey.shape) * spectrum).sum(axis=(1, 2))


def top_octave_energy(difference: np.ndarray) -> float:
  """Mean square of the channel-mean difference's top octave of frequencies."""
  return float(octave_energies(difference)[0])


def perturbations():
  """name -> function(image, rng) -> image; the rng is re-seeded alike for a crop and its fakes."""
  table = {'clean': lambda image, rng: image}
  for kernel in augment.BLUR_KERNELS:
    table[f'blur k{kernel}'] = lambda image, rng, k=kernel: augment.blur(image, k)
  for quality in (75, 50, 30, 10):
    table[f'jpeg q{quality}'] = lambda image, rng, q=quality: augment.jpeg(image, q)
  for std in (5, 12.5, 20):
    table[f'noise std {std}'] = lambda image, rng, s=std: augment.noise(image, s, rng)
  table['crop 12.5%'] = lambda image, rng: augment.crop(image, 0.125, 0.5, 0.5)
  table['multi'] = lambda image, rng: augment.augment(image, 'multi', rng)
  table['one'] = lambda image, rng: augment.augment(image, 'one', rng)
  return table


def survival(groups: dict, sources, table) -> dict:
  """groups: crop index -> {source name: image}. -> {perturbation: {source: figures}}."""
  groups = {index: images for index, images in groups.items() if 'real' in images}
  trace = lambda a, b: octave_energies(a.astype(np.int16) - b)
  clean = {index: {source: trace(images[source], images['real'])
                   for source in sources if source in images}
           for index, images in groups.items()}
  result = {}
  for name, perturb in table.items():
    kept, change = {source: [] for source in sources}, {source: [] for source in sources}
    clean_of = {source: [] for source in sources}
    for index, images in groups.items():
      # The same draw for a crop and each of its fakes: the rng restarts from the crop's seed.
      draw = lambda image: perturb(image, np.random.default_rng([0, index]))
      real = images['real']
      p_real = draw(real)
      changed = trace(p_real, real)
      for source, clean_energy in clean[index].items():
        kept[source].append(trace(draw(images[source]), p_real))
        change[source].append(changed)
        clean_of[source].append(clean_energy)
    per_source = {}
    for source in sources:
      # [crops, octaves]; the figures without "octave" in their name are the top octave's.
      kept_energy, clean_energy = np.asarray(kept[source]), np.asarray(clean_of[source])
      kept_share = kept_energy.sum(0) / np.maximum(clean_energy.sum(0), 1e-12)
      trace_rms = np.sqrt(kept_energy.mean(0))
      kept_per_crop = kept_energy[:, 0] / np.maximum(clean_energy[:, 0], 1e-12)
      per_source[source] = {'kept': float(kept_share[0]),
                            'kept_by_octave': {octave: float(share) for (octave, _, _), share
                                               in zip(OCTAVES, kept_share)},
                            'trace_rms_by_octave': {
                                octave: float(rms) for (octave, _, _), rms
                                in zip(OCTAVES, trace_rms)},
                            'crops_below_10pct': float(np.mean(kept_per_crop < 0.1)),
                            'trace_rms': float(trace_rms[0]),
                            'change_rms': float(np.sqrt(np.asarray(change[source])[:, 0].mean())),
                            'crops': len(kept_energy)}
    result[name] = per_source
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='default', help='synthetic_fingerprints config')
  parser.add_argument('--split', default='test')
  parser.add_argument('--data-dir', default=os.environ.get('TFDS_DATA_DIR', 'data/tfds'))
  parser.add_argument('--limit', type=int, default=0, help='at most this many crops (0: all)')
  parser.add_argument('--json', help='write the figures here')
  args = parser.parse_args()
  builder = pipeline.load_builder('synthetic_fingerprints', args.config, args.data_dir)
  source = pipeline.data_source(builder, args.split)
  groups = collections.defaultdict(dict)
  for i in range(len(source)):
    record = source[i]
    groups[int(record['index'])][record['source'].decode()] = np.asarray(record['image'])
  if args.limit:
    groups = dict(sorted(groups.items())[:args.limit])
  sources = sorted({s for images in groups.values() for s in images} - {'real'})
  figures = survival(groups, sources, perturbations())
  print(f'synthetic_fingerprints/{args.config} {builder.info.version} {args.split}: '
        f'{len(groups)} crops; kept % / crops below 10% / trace RMS / change RMS (top octave, '
        'grey levels)')
  print(f'{"":14s}' + ''.join(f'{s:>28s}' for s in sources))
  for name, per_source in figures.items():
    print(f'{name:14s}' + ''.join(
        f'{100 * f["kept"]:7.1f}% {100 * f["crops_below_10pct"]:4.0f}% {f["trace_rms"]:6.2f} '
        f'{f["change_rms"]:6.2f}'
        for f in per_source.values()))
  print('\nkept % by octave (cycles per pixel: ' + ', '.join(o for o, _, _ in OCTAVES) + '); '
        'the clean trace\'s RMS per octave in the first row')
  print(f'{"":14s}' + ''.join(f'{s:>28s}' for s in sources))
  clean = figures['clean']
  print(f'{"clean RMS":14s}' + ''.join(
      f'{"":7s}' + ' '.join(f'{clean[s]["trace_rms_by_octave"][o]:6.2f}' for o, _, _ in OCTAVES)
      for s in sources))
  for name, per_source in figures.items():
    print(f'{name:14s}' + ''.join(
        f'{"":7s}' + ' '.join(f'{100 * f["kept_by_octave"][o]:5.1f}%' for o, _, _ in OCTAVES)
        for f in per_source.values()))
  if args.json:
    record = {'dataset': f'synthetic_fingerprints/{args.config}', 'split': args.split,
              'version': str(builder.info.version), 'crops': len(groups),
              'build_sha256': provenance.dataset_digest(builder)['sha256'],
              'generator_psnr_db': builder.info.metadata.get('generator_psnr_db'),
              'top_octave_cycles_per_pixel': TOP_OCTAVE,
              'octaves_cycles_per_pixel': {name: [lower, upper] for name, lower, upper in OCTAVES},
              'figures': figures}
    pathlib.Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == '__main__':
  main()
