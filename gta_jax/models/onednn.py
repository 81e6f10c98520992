"""oneDNN convolutions on the CPU behind XLA's FFI: the optional `conv_impl='onednn'`.

TensorFlow's speed on the CPU comes from oneDNN's JIT-generated convolutions. This module
compiles `onednn_conv.cc` (forward, backward-data and backward-weights handlers) against jaxlib's
FFI headers and the oneDNN of the `onednn-cpu-gomp` / `onednn-devel-cpu-gomp` wheels
(requirements.txt), on first use, with the system's C++ compiler, into a cache folder
(`$GTA_JAX_CACHE`, else `$XDG_CACHE_HOME/gta_jax`, else `~/.cache/gta_jax`), one library per
(source, jaxlib, oneDNN, compiler) so an upgrade rebuilds. Nothing is downloaded.

It is optional: without a compiler, the headers or the library, `available()` is False with the
reason (`unavailable_reason()`), `conv_impl='auto'` keeps the pure-XLA `cpu` form, and asking
for `conv_impl='onednn'` is refused naming the reason. The pure-XLA forms stay the reference:
tests/models/test_convolution.py checks this form's outputs and gradients against `lax.conv`
as it does the `cpu` form's.
GTA_JAX_ONEDNN=0 turns it off (auto then picks `cpu`).
"""
import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = pathlib.Path(__file__).with_name('onednn_conv.cc')
TARGETS = ('GtaDnnlConvFwd', 'GtaDnnlConvBwdData', 'GtaDnnlConvBwdWeights')
OPT_OUT = 'GTA_JAX_ONEDNN'

_lock = threading.Lock()
_state: dict = {}  # 'lib' once loaded, or 'error': why not


def cache_dir() -> pathlib.Path:
  if os.environ.get('GTA_JAX_CACHE'):
    return pathlib.Path(os.environ['GTA_JAX_CACHE'])
  base = os.environ.get('XDG_CACHE_HOME') or pathlib.Path.home() / '.cache'
  return pathlib.Path(base) / 'gta_jax'


def _onednn_root() -> pathlib.Path | None:
  """Where the wheels put include/oneapi/dnnl and lib/libdnnl.so (the environment's prefix)."""
  for root in (os.environ.get('GTA_JAX_ONEDNN_ROOT'), sys.prefix, sys.base_prefix):
    if root and (pathlib.Path(root) / 'include/oneapi/dnnl/dnnl.hpp').exists() and any(
        (pathlib.Path(root) / 'lib').glob('libdnnl.so*')):
      return pathlib.Path(root)
  return None


def _compiler() -> str | None:
  return os.environ.get('CXX') or shutil.which('g++') or shutil.which('c++')


def _build() -> pathlib.Path:
  """Compiles the library if this (source, jaxlib, oneDNN, compiler) has none yet; its path."""
  root = _onednn_root()
  if root is None:
    raise RuntimeError('oneDNN headers and library not found under the environment '
                       f'({sys.prefix}/include/oneapi/dnnl, {sys.prefix}/lib/libdnnl.so): '
                       'pip install onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0')
  compiler = _compiler()
  if compiler is None:
    raise RuntimeError('no C++ compiler (g++ or $CXX) to build the oneDNN convolutions')
  include = pathlib.Path(jax.ffi.include_dir())
  version = (root / 'include/oneapi/dnnl/dnnl_version.h').read_bytes()
  key = hashlib.sha256(SOURCE.read_bytes() + version + jax.__version__.encode() +
                       compiler.encode() + str(root).encode()).hexdigest()[:16]
  library = cache_dir() / f'onednn-{key}' / 'libgta_onednn.so'
  if library.exists():
    return library
  library.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
    partial = pathlib.Path(scratch) / library.name
    command = [compiler, '-O2', '-std=c++17', '-shared', '-fPIC', f'-I{root / "include"}',
               f'-I{include}', str(SOURCE), '-o', str(partial), f'-L{root / "lib"}', '-ldnnl',
               f'-Wl,-rpath,{root / "lib"}']
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
      raise RuntimeError(f'building {SOURCE.name} failed ({" ".join(command)}):\n'
                         f'{result.stderr[-2000:]}')
    os.replace(partial, library)  # atomic: a concurrent process sees all or nothing
  return library


def _load():
  with _lock:
    if 'lib' in _state or 'error' in _state:
      return _state.get('lib')
    try:
      if os.environ.get(OPT_OUT, '1') == '0':
        raise RuntimeError(f'turned off ({OPT_OUT}=0)')
      lib = ctypes.cdll.LoadLibrary(str(_build()))
      for name in TARGETS:
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)), platform='cpu')
      lib.GtaDnnlImpl.restype = ctypes.c_char_p
      _state['lib'] = lib
    except (RuntimeError, OSError) as error:
      _state['error'] = str(error)
    return _state.get('lib')


def available() -> bool:
  """True when the library is built (now, if needed) and its FFI targets are registered."""
  return _load() is not None


def unavailable_reason() -> str | None:
  _load()
  return _state.get('error')


def implementations() -> str:
  """oneDNN's implementation of every primitive created so far, one per line (for benchmarks)."""
  lib = _load()
  return lib.GtaDnnlImpl().decode() if lib is not None else ''


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _attributes(x_shape, kernel_size: int, stride: int) -> dict:
  (top, bottom) = _same_padding(x_shape[1], kernel_size, stride)
  (left, right) = _same_padding(x_shape[2], kernel_size, stride)
  return dict(stride=np.int64(stride), pad_top=np.int64(top), pad_left=np.int64(left),
              pad_bottom=np.int64(bottom), pad_right=np.int64(right))


def _call(target, shape, *operands, x_shape, kernel_size, stride):
  # vmap (e.g. heads_form='vmap') runs the call once per mapped element.
  return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, jnp.float32),
                          vmap_method='sequential')(
      *operands, **_attributes(x_shape, kernel_size, stride))


def _forward(x, kernel, stride):
  shape = (x.shape[0], -(-x.shape[1] // stride), -(-x.shape[2] // stride), kernel.shape[3])
  return _call('GtaDnnlConvFwd', shape, x, kernel, x_shape=x.shape, kernel_size=kernel.shape[0],
               stride=stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """[B, H, W, C] * [k, k, C, O] -> [B, ceil(H/s), ceil(W/s), O], TF 'SAME', float32, no bias."""
  return _forward(x, kernel, stride)


def _conv_fwd(x, kernel, stride):
  return _forward(x, kernel, stride), (x, kernel)


def _conv_bwd(stride, residuals, dy):
  x, kernel = residuals
  geometry = dict(x_shape=x.shape, kernel_size=kernel.shape[0], stride=stride)
  dx = _call('GtaDnnlConvBwdData', x.shape, dy, kernel, **geometry)
  dkernel = _call('GtaDnnlConvBwdWeights', kernel.shape, x, dy, **geometry)
  return dx, dkernel


conv.defvjp(_conv_fwd, _conv_bwd)
