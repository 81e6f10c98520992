"""The real pretrained DCGAN face generator shipped in the `gan-face-generate` wheel, ported to JAX.

Its checkpoint is a torch zip archive. We read it with zipfile + numpy and an unpickler that
accepts only the handful of globals a plain state_dict needs (no torch import, no arbitrary code).
The generator is PyTorch's DCGAN tutorial net: nz=100 -> 4x4 -> ... -> 64x64x3 (tanh).
"""
import importlib.util
import io
import pathlib
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

LATENT_SIZE = 100
_STORAGE_DTYPES = {'FloatStorage': np.float32, 'LongStorage': np.int64, 'HalfStorage': np.float16,
                   'DoubleStorage': np.float64, 'IntStorage': np.int32}


def weights_path() -> pathlib.Path:
  spec = importlib.util.find_spec('gan_face_generate')
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        'The DCGAN face generator (external test source) needs the gan-face-generate wheel: '
        'pip install --no-deps gan-face-generate==1.1.1')
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / 'weights.tar'
  if not path.is_file():
    raise FileNotFoundError(f'{path} is missing from the gan-face-generate installation.')
  return path


class _StorageRef:
  def __init__(self, dtype, key):
    self.dtype, self.key = dtype, key


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """A tensor view of `storage`, bounds-checked first: as_strided would read any memory a crafted
  offset or stride points at (and crash the process)."""
  del unused
  is_count = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0
  if not (isinstance(storage, np.ndarray) and is_count(offset) and
          isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list)) and
          len(size) == len(stride) and all(map(is_count, size)) and all(map(is_count, stride))):
    raise pickle.UnpicklingError(f'malformed tensor record (offset {offset!r}, size {size!r}, '
                                 f'stride {stride!r})')
  last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
  if last >= storage.size or (not all(size) and offset > storage.size):
    raise pickle.UnpicklingError(f'tensor of size {tuple(size)}, stride {tuple(stride)} at offset '
                                 f'{offset} reaches past its storage of {storage.size} values')
  array = storage[offset:]
  itemsize = array.itemsize
  return np.lib.stride_tricks.as_strided(array, shape=tuple(size),
                                         strides=tuple(s * itemsize for s in stride)).copy()


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only OrderedDict, tensor rebuilding and storage types; anything else is refused."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
    super().__init__(file)
    self._archive, self._prefix = archive, prefix

  def find_class(self, module, name):
    if (module, name) == ('collections', 'OrderedDict'):
      import collections
      return collections.OrderedDict
    if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
      return _rebuild_tensor
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _STORAGE_DTYPES[name]
    raise pickle.UnpicklingError(f'refusing to load global {module}.{name} from the checkpoint')

  def persistent_load(self, pid):
    kind, dtype, key, _location, _numel = pid
    if kind != 'storage':
      raise pickle.UnpicklingError(f'unexpected persistent id {pid!r}')
    raw = self._archive.read(f'{self._prefix}/data/{key}')
    return np.frombuffer(raw, dtype=dtype)


def load_state_dict(path=None) -> dict[str, np.ndarray]:
  """-> the generator's state_dict as numpy arrays."""
  path = pathlib.Path(path) if path else weights_path()
  try:
    with zipfile.ZipFile(path) as archive:
      pickle_name = next((n for n in archive.namelist() if n.endswith('/data.pkl')), None)
      if pickle_name is None:
        raise ValueError('no */data.pkl inside (not a PyTorch checkpoint)')
      prefix = pickle_name.rsplit('/', 1)[0]
      checkpoint = _RestrictedUnpickler(io.BytesIO(archive.read(pickle_name)), archive,
                                        prefix).load()
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get('netG_state_dict'), dict):
      raise ValueError('no netG_state_dict in the checkpoint')
  except (zipfile.BadZipFile, pickle.UnpicklingError, ValueError, KeyError, EOFError) as e:
    raise ValueError(f'{path}: cannot load the DCGAN generator weights ({e}).') from None
  return dict(checkpoint['netG_state_dict'])


def conv_transpose(x: jax.Array, weight: np.ndarray, stride: int, padding: int) -> jax.Array:
  """PyTorch ConvTranspose2d (no bias) on NHWC; weight [in, out, kh, kw] as torch stores it."""
  kernel = jnp.asarray(weight[:, :, ::-1, ::-1].transpose(2, 3, 0, 1))  # -> HWIO, flipped
  k = weight.shape[2]
  pad = k - 1 - padding
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), [(pad, pad), (pad, pad)],
                                      lhs_dilation=(stride, stride),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def generate(state: dict, latents: jax.Array) -> jax.Array:
  """[B, 100] latents -> [B, 64, 64, 3] float in [-1, 1] (BatchNorm in eval mode)."""
  h = latents[:, None, None, :]
  layers = [(0, 1, 1, 0), (3, 4, 2, 1), (6, 7, 2, 1), (9, 10, 2, 1)]
  for conv_index, bn_index, stride, padding in layers:
    h = conv_transpose(h, state[f'main.{conv_index}.weight'], stride, padding)
    bn = lambda n: jnp.asarray(state[f'main.{bn_index}.{n}'])
    h = (h - bn('running_mean')) / jnp.sqrt(bn('running_var') + 1e-5) * bn('weight') + bn('bias')
    h = jax.nn.relu(h)
  return jnp.tanh(conv_transpose(h, state['main.12.weight'], 2, 1))


def sample_faces(count: int, seed: int, state=None) -> np.ndarray:
  """[count, 64, 64, 3] uint8 faces from fixed latents N(0, 1) drawn from `seed`."""
  state = load_state_dict() if state is None else state
  latents = jax.random.normal(jax.random.key(seed), (count, LATENT_SIZE))
  images = jax.jit(lambda z: generate(state, z))(latents)
  return np.asarray(jnp.clip(jnp.round((images + 1) * 127.5), 0, 255).astype(jnp.uint8))
