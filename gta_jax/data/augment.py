"""The paper's "laundering" perturbations, implementing its intent where the release is buggy.

- blur: Gaussian, kernel 3/5/7/9, sigma from the kernel size as OpenCV computes it when sigma is 0
  (0.3 * ((k - 1) * 0.5 - 1) + 0.8). The release passed cv2.BORDER_DEFAULT (= 4) as sigma, so its
  sigma was always 4; `release_blur_sigma=True` reproduces that.
- crop: an asymmetric crop of U[5, 20)% per axis, split randomly between the two sides, then a
  bicubic resize back to the original size.
- jpeg: a real encode at quality U[10, 75] (the release's encoder always used quality 95).
- noise: i.i.d. Gaussian with std U[5, 20] on the 0-255 scale, clipped, truncated to uint8 (as the
  release draws it; the paper says "variance U(5, 20)", which `noise_variance=True` follows:
  std = sqrt(U[5, 20])).

`multi` applies each with p = 0.5 in the order blur -> crop -> jpeg -> noise; `one` (not the
paper's) applies at most one, drawn from {none, blur, crop, jpeg, noise} with p = 1/5 each, so no
image carries stacked perturbations (docs/research/2026-12-03-one-perturbation-per-image.md); a single-kind mode
(`blur`, `crop`, `jpeg`, `noise`) applies that kind to half of the images; `clean` does nothing.
All draws come from a numpy Generator the caller derives from (seed, epoch, index), so a resumed
run sees exactly the same images.

`soften` is not one of the paper's perturbations: it is the real-class softening of the built-in
data (config.data.real_softening), a Gaussian blur of a share of the *real* training images only,
so that softness alone says nothing about the label (see gta_jax/data/pipeline.py).
`photometric_jitter` is the built-in data's other widening of the training distribution
(config.data.photometric_jitter): random saturation, contrast, brightness and gamma for real and
fake images alike, one draw per content group, so that colour and tone say nothing either.
`Widening` holds both as config.data sets them and applies them in one fixed order.
"""
import dataclasses
import io

import cv2
import numpy as np
from PIL import Image

MODES = ('clean', 'multi', 'one', 'blur', 'crop', 'jpeg', 'noise')
KINDS = ('blur', 'crop', 'jpeg', 'noise')
KIND_BITS = {kind: bit for bit, kind in enumerate(KINDS)}  # augment_recorded's bit of each kind


@dataclasses.dataclass(frozen=True)
class Options:
  """Readings of the paper that differ from the release (config.data.release_blur_sigma,
  config.data.noise_variance)."""
  release_blur_sigma: bool = False  # the release's fixed sigma 4 (its bug) instead of OpenCV's
  noise_variance: bool = False      # the paper's "variance U(5, 20)" instead of the release's std
BLUR_KERNELS = (3, 5, 7, 9)


def blur(image: np.ndarray, kernel: int, sigma: float | None = None) -> np.ndarray:
  """sigma None: OpenCV's automatic sigma (it passes 0 and lets OpenCV pick, which for k <= 7
  also uses OpenCV's fixed small-kernel tables, exactly as the authors intended)."""
  sigma = 0.0 if sigma is None else sigma
  return cv2.GaussianBlur(image, (kernel, kernel), sigmaX=sigma, sigmaY=sigma,
                          borderType=cv2.BORDER_REFLECT_101)


def crop(image: np.ndarray, fraction: float, split_y: float, split_x: float) -> np.ndarray:
  """Removes int(size * fraction) rows/cols per axis, `split` of them at the top/left; resizes back."""
  height, width = image.shape[:2]
  cut_y, cut_x = int(height * fraction), int(width * fraction)
  top, left = int(cut_y * split_y), int(cut_x * split_x)
  cropped = image[top:height - (cut_y - top), left:width - (cut_x - left)]
  return cv2.resize(cropped, (width, height), interpolation=cv2.INTER_CUBIC)


def jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
  """The JPEG file the perturbation writes (PIL, libjpeg's IJG tables at `quality`, 4:2:0):
  tests read its quantisation tables back (gta_jax/data/containers.py)."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='JPEG', quality=int(quality))
  return buffer.getvalue()


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(jpeg_bytes(image, quality))).convert('RGB'))


def noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
  noisy = image.astype(np.float64) + std * rng.standard_normal(image.shape)
  return np.clip(noisy, 0, 255).astype(np.uint8)  # truncation, as the release


def _apply(kind: str, image: np.ndarray, rng: np.random.Generator, options: Options):
  if kind == 'blur':
    kernel = int(rng.choice(BLUR_KERNELS))
    return blur(image, kernel, 4.0 if options.release_blur_sigma else None)
  if kind == 'crop':
    return crop(image, rng.uniform(0.05, 0.2), rng.uniform(), rng.uniform())
  if kind == 'jpeg':
    return jpeg(image, rng.integers(10, 76))
  if kind == 'noise':
    drawn = rng.uniform(5, 20)
    return noise(image, np.sqrt(drawn) if options.noise_variance else drawn, rng)
  raise ValueError(kind)


def augment(image: np.ndarray, mode: str, rng: np.random.Generator,
            options: Options = Options()) -> np.ndarray:
  """[H, W, 3] uint8 -> [H, W, 3] uint8 perturbed per `mode` (see module docstring)."""
  return augment_recorded(image, mode, rng, options)[0]


def augment_recorded(image: np.ndarray, mode: str, rng: np.random.Generator,
                     options: Options = Options()) -> tuple[np.ndarray, int]:
  """`augment`, and which perturbations it applied: bit i set for KINDS[i] (the same draws, so
  the same image). Test sets keep it per image, so metrics can say which perturbation a model
  fails on (metrics.by_perturbation)."""
  if mode == 'clean':
    return image, 0
  if mode == 'multi':
    applied = 0
    for kind in KINDS:
      if rng.uniform() < 0.5:
        image, applied = _apply(kind, image, rng, options), applied | 1 << KIND_BITS[kind]
    return image, applied
  if mode == 'one':
    choice = int(rng.integers(len(KINDS) + 1))
    if choice == len(KINDS):
      return image, 0
    return _apply(KINDS[choice], image, rng, options), 1 << KIND_BITS[KINDS[choice]]
  if mode in MODES:
    if rng.uniform() < 0.5:
      return _apply(mode, image, rng, options), 1 << KIND_BITS[mode]
    return image, 0
  raise ValueError(f'unknown augmentation mode {mode!r}; choose one of {", ".join(MODES)}.')


def kinds_of(mode: str) -> tuple[str, ...]:
  """The perturbations `mode` can apply, in KINDS order."""
  if mode not in MODES:
    raise ValueError(f'unknown augmentation mode {mode!r}; choose one of {", ".join(MODES)}.')
  return () if mode == 'clean' else KINDS if mode in ('multi', 'one') else (mode,)


def touched(applied, kind: str):
  """Bit sets of `augment_recorded` (an int or an array of them) -> whether `kind` was applied."""
  return (np.asarray(applied) >> KIND_BITS[kind] & 1).astype(bool)


def applied_kinds(applied: int) -> tuple[str, ...]:
  """A bit set of `augment_recorded` -> the names of the perturbations it holds, in KINDS order."""
  return tuple(kind for kind in KINDS if touched(applied, kind))


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
  """The generator for one example's draws: a function of (seed, epoch, index) only."""
  return np.random.default_rng([seed, epoch, index])


# Real-class softening: sigma drawn log-uniformly over this range (px). The built-in fakes are
# about as soft as a sigma-0.6 blur of their inputs; a camera's defocus, motion and denoising
# reach far softer, so the range runs well past that.
SOFTENING_SIGMA = (0.4, 2.5)


def soften(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """[H, W, 3] uint8 -> the same, Gaussian-blurred with a random sigma in SOFTENING_SIGMA."""
  low, high = np.log(SOFTENING_SIGMA[0]), np.log(SOFTENING_SIGMA[1])
  return gaussian_blur(image, float(np.exp(rng.uniform(low, high))))


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
  """An untruncated Gaussian of `sigma` px (OpenCV sizes the kernel), mirrored at the border."""
  return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma,
                          borderType=cv2.BORDER_REFLECT_101)


def softening_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
  """The softening draw's own stream, so that it leaves the perturbations' draws unchanged."""
  return np.random.default_rng([seed, epoch, index, 1])


# Photometric jitter (config.data.photometric_jitter): factors drawn log-uniformly over these
# ranges, the brightness shift uniformly (0-255 scale). Wide enough to take the bundled photos'
# few palettes to saturated flowers, grey skies and hard studio light. A share of the draws is
# fully grey (R = G = B): the bundled photos are all in colour, and the first detectors called a
# grey-scale camera photo fake on every crop.
JITTER_SATURATION = (0.4, 2.0)
JITTER_GREY_SHARE = 0.15
JITTER_CONTRAST = (0.5, 2.0)
JITTER_BRIGHTNESS = 32.0
JITTER_GAMMA = (0.67, 1.5)


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
  return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))


def jitter_factors(rng: np.random.Generator) -> tuple[float, float, float, float]:
  """One photometric_jitter draw: (saturation, contrast, brightness, gamma); saturation 0 for the
  grey draws."""
  saturation, contrast = _log_uniform(rng, JITTER_SATURATION), _log_uniform(rng, JITTER_CONTRAST)
  if rng.uniform() < JITTER_GREY_SHARE:
    saturation = 0.0
  brightness, gamma = rng.uniform(-JITTER_BRIGHTNESS, JITTER_BRIGHTNESS), _log_uniform(rng, JITTER_GAMMA)
  return saturation, contrast, brightness, gamma


def apply_photometric_jitter(image: np.ndarray, saturation: float, contrast: float,
                             brightness: float, gamma: float) -> np.ndarray:
  """[H, W, 3] uint8 -> the same with the given saturation, contrast (about the image's mean),
  brightness and gamma, in float32, clipped and rounded back to uint8."""
  pixels = image.astype(np.float32)
  grey = pixels @ np.array([0.299, 0.587, 0.114], np.float32)
  pixels = grey[..., None] + saturation * (pixels - grey[..., None])
  mean = pixels.mean()
  pixels = mean + contrast * (pixels - mean) + brightness
  pixels = 255.0 * (np.clip(pixels, 0.0, 255.0) / 255.0) ** gamma
  return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def photometric_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """[H, W, 3] uint8 -> the same with random saturation, contrast (about the image's mean),
  brightness and gamma, clipped and rounded back to uint8. Pointwise in space: an upsampler's
  spatial fingerprint is scaled with the image, never removed."""
  return apply_photometric_jitter(image, *jitter_factors(rng))


def jitter_rng(seed: int, epoch: int, group: int) -> np.random.Generator:
  """The jitter's own stream, keyed by content group: a crop and its fakes share one draw."""
  return np.random.default_rng([seed, epoch, group, 2])


@dataclasses.dataclass(frozen=True)
class Widening:
  """The training-only widenings of the training distribution, one value per config.data key
  (real_softening, photometric_jitter). The data layer applies them to the training and
  validation splits only; `NONE` everywhere else.

  One frozen value instead of arguments threaded through every layer: a new widening is a field
  here and a step in `apply`."""
  real_softening: float = 0.0      # share of real images blurred (soften)
  photometric_jitter: float = 0.0  # share of content groups given one photometric_jitter draw

  @classmethod
  def from_config(cls, data_config) -> 'Widening':
    return cls(float(data_config.get('real_softening', 0.0)),
               float(data_config.get('photometric_jitter', 0.0)))

  def apply(self, image: np.ndarray, label: int, *, seed: int, epoch: int, position: int,
            group: int) -> np.ndarray:
    """One example's widened image. Each widening draws from its own stream: per position for
    the real-only ones, per content group (a crop and its fakes alike) for the others, so turning
    one on leaves the draws of the rest and of the perturbations unchanged."""
    if self.real_softening and label == 0:  # before the perturbations: part of the photo
      rng = softening_rng(seed, epoch, position)
      if rng.uniform() < self.real_softening:
        image = soften(image, rng)
    if self.photometric_jitter:
      rng = jitter_rng(seed, epoch, group)
      if rng.uniform() < self.photometric_jitter:
        image = photometric_jitter(image, rng)
    return image


Widening.NONE = Widening()
