"""Install self-check: runs a tiny model and the perturbations on shipped inputs and compares the
results with stored expectations. Prints the environment, one line per check, and exits 0 when
everything agrees, 1 naming every check that differs, 2 when its data is missing or unreadable.

gta-verify [--data DIR]          (also: python -m gta_jax.verify)

The data (gta_jax/verify_data/, written once by `python -m gta_jax.tools.verify_write DIR`; the
check never rewrites it): six procedural PNGs (five 32x32, among them a near-grey one, and
one 40x24), the proposed detector with two heads in model.npz (float16 values, so the stored
bytes define the weights exactly; 140 KB, not a few: 27,261 + 2 x 21,345 variables at two bytes
each, random values that compression cannot shrink), and expected.npz / expected.json.

What runs is the code a user runs: the images are read with the data layer's reader and scored by
`attribute`'s own function (bucketed, padded, batched) and by `score_batch` on one zero-padded
mixed-size batch with `valid_size`; the convolutions take the backend's usual lowering (the
CPU-tuned one on CPU, XLA's own elsewhere). Tolerances, and why (docs/verify.md has the numbers):

- scores: compared as logits (logit(p) of the float32 probability, in float64) with the stored
  float64 logits of each image scored alone, |diff| <= 2e-4. Float32 rounding (unit roundoff
  6e-8) in eight layers whose reductions are 27-512 terms long, amplified by batch norm, moves
  these logits (|logit| <= 2.4) by up to 3.5e-6 with the CPU lowering and 6.4e-6 with
  lax.conv (measured on this model; reading p back costs another ~1e-6 near p = 0.92). A GPU
  orders the sums differently and cuDNN may pick Winograd or FFT algorithms, whose error can be
  ~10x a direct sum's: 2e-4 is 30x the worst measured and 3x that pessimistic case, yet under
  what a one-step float16 change of a single batch-norm variance costs (5.8e-4) and far under
  float16 arithmetic (1.3e-2), a PyTorch-style batch-norm epsilon (7e-2) or a flipped kernel (7).
  The comparison runs at float32 matmul/convolution precision ('highest'): GPUs with TF32
  (NVIDIA Ampere and later) may otherwise do float32 convolutions with 10-bit mantissas (relative
  ~1e-3 per layer), which no bound that still detects a wrong result could absorb. So this checks
  the code and the float32 arithmetic; on a non-CPU backend an info line also gives the difference
  at the default precision, which is what scoring runs at.
- CAMs: |diff| <= 1e-4 of each map's largest magnitude (measured 1.4e-6: the CAM is a 32-term
  weighted sum of the last layer's features, which carry the logits' relative error).
- log-DCT, numpy float64 (the DCT models' host input): |DCT| compared, |diff| <= 1e-13 of the
  image's largest coefficient. Two matmuls of 24-40 terms; the classic bound (H + W + 2) u
  sum|terms|, with sum|terms| <= 255 sqrt(HW) <= 2.1x the largest coefficient for these images
  (grey means 125-159), is 1.5e-14 of it (u = 1.1e-16), whatever order a CPU's BLAS sums in.
  Magnitudes, not logs: a coefficient that is exactly zero (the near-grey image has many) is
  float64 noise whose log is arbitrary.
- log-DCT, jax float32 (on the backend, HIGHEST precision matmuls), against the float64 values:
  |diff| <= 1e-5 of the largest coefficient, the same bound at u = 6e-8 (8e-6) plus the float32
  log's and exp's rounding (3e-7); measured 3.8e-7.
- JPEG (PIL, qualities 10, 50, 75): decoded pixels exactly equal, and the file's quantisation
  tables read back (gta_jax/data/containers.py) as exactly that IJG quality, 4:2:0. libjpeg-turbo,
  which Pillow's wheels ship, encodes and decodes with integer arithmetic (the accurate islow DCT,
  fancy upsampling), its SIMD paths bit-exact with its C code; a difference means another codec
  (e.g. a Pillow built on IJG libjpeg 9, whose DCT scaling differs), and so other training
  perturbations: worth knowing, not worth hiding.
- blur (kernels 3 and 9) and crop (bicubic resize back): <= 1 grey level. OpenCV computes both
  on uint8 in fixed point, but its x86 wheels hand some sizes to Intel IPP, whose rounding may
  differ from OpenCV's own code (ARM wheels, builds without IPP) by one level.
- PNG decoding: exactly the stored pixels.
"""
import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import pathlib
import platform
import sys

import numpy as np

from gta_jax import errors
from gta_jax.tools import cli

DATA_DIR = pathlib.Path(__file__).resolve().parents[1] / 'verify_data'
LOGIT_TOL = 2e-4
CAM_TOL = 1e-4
DCT64_TOL = 1e-13
DCT32_TOL = 1e-5
JPEG_TOL = 0
CV_TOL = 1  # blur, crop


@dataclasses.dataclass
class Result:
  name: str
  diff: float
  tol: float
  detail: str = ''

  @property
  def ok(self) -> bool:
    return bool(self.diff <= self.tol)


def flatten(tree, prefix='') -> dict[str, np.ndarray]:
  """Nested dicts of arrays -> {'a/b/c': array}: model.npz's keys."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f'{prefix}{key}/'))
    else:
      out[f'{prefix}{key}'] = np.asarray(value)
  return out


def unflatten(flat: dict) -> dict:
  tree = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split('/')
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def load_weights(path) -> dict:
  """model.npz (flat '/'-joined keys, float16) -> nested variables, float32."""
  with np.load(path, allow_pickle=False) as data:
    return unflatten({k: np.asarray(data[k], np.float32) for k in data.files})


def environment() -> dict:
  """Versions, backend, device and CPU: what a difference may come from."""
  import jax

  def version(package):
    try:
      return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      return 'not installed'

  env = {'gta_jax': version('gta_jax'), 'python': platform.python_version(),
         'platform': platform.platform()}
  for package in ('jax', 'jaxlib', 'flax', 'numpy', 'scipy', 'pillow', 'opencv-python-headless'):
    env[package] = version(package)
  try:
    from PIL import features
    env['libjpeg-turbo (Pillow)'] = features.version('libjpeg_turbo') or 'none (another libjpeg)'
  except Exception as e:  # noqa: BLE001 -- a report, not a check
    env['libjpeg-turbo (Pillow)'] = f'unknown ({e})'
  try:
    import cv2
    env['opencv'] = cv2.__version__ + (f', IPP {cv2.ipp.getIppVersion()}' if cv2.ipp.useIPP()
                                       else ', no IPP')
  except Exception as e:  # noqa: BLE001
    env['opencv'] = f'unknown ({e})'
  env['backend'] = jax.default_backend()
  env['devices'] = ', '.join(sorted({f'{d.platform}: {d.device_kind}' for d in jax.devices()}))
  env['cpu'] = _cpu()
  return env


def _cpu() -> str:
  try:
    text = pathlib.Path('/proc/cpuinfo').read_text()
  except OSError:
    return platform.processor() or platform.machine()
  fields = {}
  for line in text.splitlines():
    key, _, value = line.partition(':')
    fields.setdefault(key.strip(), value.strip())
  flags = set(fields.get('flags', fields.get('Features', '')).split())
  model = fields.get('model name') or fields.get('Model') or platform.machine()
  family = (f' (family {fields["cpu family"]} model {fields["model"]})'
            if 'cpu family' in fields and 'model' in fields else '')
  extensions = [f for f in ('avx2', 'fma', 'avx512f', 'asimd', 'sve') if f in flags]
  cores = text.count('\nprocessor') + text.startswith('processor')
  return f'{model}{family}, {cores} cores, {"+".join(extensions) or "no AVX2/FMA/AVX-512"}'


# ------------------------------------------------------------------------------------ data


@dataclasses.dataclass
class Data:
  directory: pathlib.Path
  meta: dict
  expected: dict
  variables: dict

  def __getitem__(self, key):
    if key not in self.expected:
      raise errors.UsageError(f'{self.directory / "expected.npz"}: no entry {key!r}; the file is '
                              'incomplete (reinstall gta_jax, or pass the --data folder that '
                              'goes with this version).')
    return self.expected[key]

  def image_path(self, name) -> pathlib.Path:
    return self.directory / 'images' / f'{name}.png'


def load_data(directory) -> Data:
  directory = pathlib.Path(directory)
  names = ['expected.json', 'expected.npz', 'model.npz']
  for name in names:
    if not (directory / name).is_file():
      raise errors.UsageError(f'{directory / name}: missing; the self-check\'s data is '
                              'incomplete (reinstall gta_jax, or pass --data DIR).')
  try:
    meta = json.loads((directory / 'expected.json').read_text())
    images = list(meta['images'])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise errors.UsageError(f'{directory / "expected.json"}: unreadable ({e}).') from None
  try:
    with np.load(directory / 'expected.npz', allow_pickle=False) as data:
      expected = {k: data[k] for k in data.files}
  except (OSError, ValueError) as e:
    raise errors.UsageError(f'{directory / "expected.npz"}: unreadable ({e}).') from None
  try:
    variables = load_weights(directory / 'model.npz')
  except (OSError, ValueError) as e:
    raise errors.UsageError(f'{directory / "model.npz"}: unreadable ({e}).') from None
  for name in images:
    if not (directory / 'images' / f'{name}.png').is_file():
      raise errors.UsageError(f'{directory / "images" / (name + ".png")}: missing; the '
                              'self-check\'s data is incomplete.')
  return Data(directory, meta, expected, variables)


# ---------------------------------------------------------------------------------- checks


def _logit(p) -> np.ndarray:
  p = np.asarray(p, np.float64)
  with np.errstate(divide='ignore'):
    return np.log(p) - np.log1p(-p)


def _model(data: Data):
  from gta_jax.io import checkpoints
  from gta_jax.scoring import inference
  spec = checkpoints.ModelSpec(input_kind='pixel', image_size=32,
                               head_names=tuple(data.meta['heads']), source='gta_jax verify_data',
                               primary_digest=checkpoints.tree_digest(data.variables['primary']))
  return inference.LoadedModel(spec, data.variables, origin=str(data.directory))


def check_images(data: Data) -> tuple[Result, dict]:
  from gta_jax.data import images as images_lib
  pixels, worst, detail = {}, 0, ''
  for name in data.meta['images']:
    try:
      rgb, _ = images_lib.read_rgb(data.image_path(name))
    except images_lib.ImageReadError as e:
      raise errors.UsageError(str(e)) from None
    pixels[name] = rgb
    want = data[f'image/{name}']
    diff = 256 if rgb.shape != want.shape else int(np.abs(rgb.astype(int) - want).max())
    if diff > worst:
      worst, detail = diff, name
  return Result('PNG decode', worst, 0, detail), pixels


def check_attribute(data: Data) -> Result:
  """The images scored by `attribute`'s own function (read, bucketed, padded, batched)."""
  from gta_jax.scoring import inference
  names = data.meta['images']
  records = inference.attribute(_model(data), [data.image_path(n) for n in names])
  failed = [r['error'] for r in records if r['error']]
  if failed:
    return Result('scores: attribute()', np.inf, LOGIT_TOL, '; '.join(failed))
  got = np.array([[r['p_fake']] + [r['p_heads'][h] for h in data.meta['heads']] for r in records])
  want = np.concatenate([data['logit_fake'][:, None], data['logit_heads'].T], axis=1)
  return _logit_result('scores: attribute()', _logit(got), want, names)


def _logit_result(name, got, want, names) -> Result:
  diff = np.abs(got - want)
  diff = np.where(np.isnan(diff), np.inf, diff)
  row, col = np.unravel_index(np.argmax(diff), diff.shape)
  return Result(name, float(diff.max()), LOGIT_TOL,
                f'{names[row]}, {"p_fake" if col == 0 else f"head {col}"}')


def padded_batch(data: Data, pixels: dict):
  """Every image zero-padded into one 48x48 batch of 8 with valid_size, through score_batch."""
  from gta_jax.models import spectral
  from gta_jax.scoring import inference
  names = data.meta['images']
  x = np.zeros((8, 48, 48, 3), np.float32)
  valid = np.ones((8, 2), np.int32)
  for row, name in enumerate(names):
    h, w = pixels[name].shape[:2]
    x[row, :h, :w] = np.asarray(spectral.scale_pixels(pixels[name]))
    valid[row] = h, w
  import jax
  return jax.device_get(inference.score_batch(
      data.variables, x, input_kind='pixel', num_heads=len(data.meta['heads']),
      with_saliency=True, valid_size=valid))


def check_padded(data: Data, pixels: dict, outputs) -> list[Result]:
  names = data.meta['images']
  p_fake, p_heads, maps, _ = outputs
  got = np.concatenate([p_fake[:len(names), None], p_heads[:, :len(names)].T], axis=1)
  want = np.concatenate([data['logit_fake'][:, None], data['logit_heads'].T], axis=1)
  scores = _logit_result('scores: score_batch(padded, valid_size)', _logit(got), want, names)
  worst, detail = 0.0, ''
  for row, name in enumerate(names):
    h, w = pixels[name].shape[:2]
    got_maps = maps[:, row, :-(-h // 8), :-(-w // 8)]
    want_maps = data[f'cam/{name}']
    if got_maps.shape != want_maps.shape:
      diff = np.inf
    else:
      scale = np.abs(want_maps).max(axis=(1, 2))
      diff = float((np.abs(got_maps - want_maps).max(axis=(1, 2)) / scale).max())
    if not diff <= worst:
      worst, detail = diff, name
  return [scores, Result('CAMs: score_batch (of max |CAM|)', worst, CAM_TOL, detail)]


def check_dct(data: Data, pixels: dict) -> list[Result]:
  import jax
  from gta_jax.models import spectral
  results = []
  for label, fn, tol in [('log-DCT: numpy float64 (of max |coef|)', spectral.log_dct_numpy, DCT64_TOL),
                         ('log-DCT: jax float32 (of max |coef|)',
                          lambda rgb: np.asarray(jax.device_get(spectral.log_dct(rgb)), np.float64),
                          DCT32_TOL)]:
    worst, detail = 0.0, ''
    for name in data.meta['images']:
      got, want = np.exp(fn(pixels[name])), np.exp(data[f'log_dct/{name}'])
      diff = np.inf if got.shape != want.shape else float(np.abs(got - want).max() / want.max())
      if not diff <= worst:
        worst, detail = diff, name
    results.append(Result(label, worst, tol, detail))
  return results


def check_perturbations(data: Data, pixels: dict) -> list[Result]:
  from gta_jax.data import augment
  from gta_jax.data import containers
  runs = []
  for q in data.meta['jpeg_qualities']:
    runs.append((f'JPEG q{q}: pixels', f'jpeg_q{q}', lambda rgb, q=q: augment.jpeg(rgb, q), JPEG_TOL))
  for k in data.meta['blur_kernels']:
    runs.append((f'blur k{k}', f'blur_k{k}', lambda rgb, k=k: augment.blur(rgb, k), CV_TOL))
  crop = data.meta['crop']
  runs.append((f'crop {crop["fraction"]:g} + bicubic resize', 'crop',
               lambda rgb: augment.crop(rgb, **crop), CV_TOL))
  results = []
  for label, key, fn, tol in runs:
    worst, detail = 0, ''
    for name in data.meta['images']:
      got, want = fn(pixels[name]), data[f'{key}/{name}']
      diff = 256 if got.shape != want.shape else int(np.abs(got.astype(int) - want).max())
      if diff > worst:
        changed = int((np.abs(got.astype(int) - want) > 0).sum()) if diff < 256 else got.size
        worst, detail = diff, f'{name}, {changed} of {want.size} values'
    results.append(Result(label, worst, tol, detail))
  # The written files' quantisation tables: the IJG quality asked for, 4:2:0.
  wrong = []
  for q in data.meta['jpeg_qualities']:
    read = containers.read_jpeg(augment.jpeg_bytes(pixels[data.meta['images'][0]], q))
    if read != {'quality': q, 'quality_exact': True, 'subsampling': '4:2:0'}:
      wrong.append(f'q{q} read back as {read}')
  results.append(Result('JPEG: qualities read back from the tables', len(wrong), 0, '; '.join(wrong)))
  return results


def run_checks(data: Data) -> tuple[list[Result], list[str]]:
  """-> (the checks' results, info lines)."""
  import jax
  image_result, pixels = check_images(data)
  results, info = [image_result], []
  with jax.default_matmul_precision('highest'):
    results.append(check_attribute(data))
    outputs = padded_batch(data, pixels)
    results += check_padded(data, pixels, outputs)
    results += check_dct(data, pixels)
  if jax.default_backend() != 'cpu':  # what scoring runs at: a report, not a check
    default = check_padded(data, pixels, padded_batch(data, pixels))
    info.append(f'info: at the default matmul precision (TF32 may apply), logits differ by up to '
                f'{default[0].diff:.2e}, CAMs by {default[1].diff:.2e} of their max')
  results += check_perturbations(data, pixels)
  return results, info


def format_result(result: Result) -> str:
  number = (f'{result.diff:.2e}' if isinstance(result.diff, float) and result.diff not in (0, np.inf)
            else f'{result.diff:g}')
  tol = f'{result.tol:.0e}' if isinstance(result.tol, float) else f'{result.tol}'
  status = 'OK' if result.ok else 'DIFFERS'
  line = f'  {result.name:<46} max diff {number:>9}  tol {tol:>5}  {status}'
  return line + (f'  (worst: {result.detail})' if result.detail and result.diff else '')


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='gta-verify', description='Install self-check: scores shipped images with a tiny '
      'model, runs the perturbations, and compares with stored expectations within stated '
      'tolerances (see docs/verify.md). Exit 0: all agree; 1: some differ (named); 2: data '
      'missing or unreadable.')
  parser.add_argument('--data', default=str(DATA_DIR),
                      help='the expectations folder (default: the installed one, %(default)s)')
  return parser


def run(args) -> int:
  env = environment()
  print('environment:')
  for key, value in env.items():
    print(f'  {key + ":":<24} {value}')
  data = load_data(args.data)
  print(f'data: {data.directory}')
  results, info = run_checks(data)
  print('checks:')
  for result in results:
    print(format_result(result))
  for line in info:
    print(line)
  differs = [r.name for r in results if not r.ok]
  if differs:
    print(f'\nFAILED: {len(differs)} of {len(results)} checks differ: ' + '; '.join(differs))
    return cli.SOME_FAILED
  print(f'\nOK: all {len(results)} checks agree within their tolerances.')
  return cli.OK


def main(argv=None) -> int:
  return cli.run_tool(run, build_parser().parse_args(argv))


if __name__ == '__main__':
  sys.exit(main())
