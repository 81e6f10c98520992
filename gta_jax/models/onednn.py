"""oneDNN convolutions on the CPU behind XLA's FFI: building and loading the handlers of the
optional `conv_impl='onednn'`.

TensorFlow's speed on the CPU comes from oneDNN's JIT-generated convolutions. This module
compiles `onednn_conv.cc` (convolution forward, backward-data and backward-weights handlers, with
and without bias, and a training BatchNorm-ReLU forward and backward) against jaxlib's
FFI headers and the oneDNN of the `onednn-cpu-gomp` / `onednn-devel-cpu-gomp` wheels
(requirements.txt), on first use, with the system's C++ compiler, into a cache folder
(`$GTA_JAX_CACHE`, else `$XDG_CACHE_HOME/gta_jax`, else `~/.cache/gta_jax`), one library per
(source, jaxlib, oneDNN, compiler) so an upgrade rebuilds. Nothing is downloaded.

It is optional: without a compiler, the headers or the library, `available()` is False with the
reason (`unavailable_reason()`), `conv_impl='auto'` keeps the pure-XLA `cpu` form, and asking
for `conv_impl='onednn'` is refused naming the reason. The pure-XLA forms stay the reference:
gta_jax/models/convolution.py wraps the handlers (TARGETS) in the custom VJP of
`conv_impl='onednn'`; tests/models/test_convolution.py checks its outputs and gradients against
`lax.conv` as it does the `cpu` form's.
GTA_JAX_ONEDNN=0 turns it off (auto then picks `cpu`).
"""
import ctypes
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading

import jax

SOURCE = pathlib.Path(__file__).with_name('onednn_conv.cc')
TARGETS = ('GtaDnnlConvFwd', 'GtaDnnlConvBwdData', 'GtaDnnlConvBwdWeights', 'GtaDnnlConvBiasFwd',
           'GtaDnnlConvBwdWeightsBias', 'GtaDnnlBnReluFwd', 'GtaDnnlBnReluBwd')
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
      lib.GtaDnnlBnWorkspaceBytes.restype = ctypes.c_int64
      lib.GtaDnnlBnWorkspaceBytes.argtypes = [ctypes.c_int64] * 4 + [ctypes.c_float]
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


def batch_norm_workspace_bytes(shape, epsilon: float) -> int:
  """Bytes of the training BatchNorm-ReLU's workspace (its ReLU mask) for an NHWC shape."""
  size = _load().GtaDnnlBnWorkspaceBytes(*(int(d) for d in shape), float(epsilon))
  if size < 0:
    raise RuntimeError(f'oneDNN has no training BatchNorm for shape {tuple(shape)}')
  return size


def implementations() -> str:
  """oneDNN's implementation of every primitive created so far, one per line (for benchmarks)."""
  lib = _load()
  return lib.GtaDnnlImpl().decode() if lib is not None else ''
