"""The DCGAN checkpoint reader refuses crafted archives: foreign globals, out-of-range tensors."""
import collections
import io
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest

from gta_jax.data import builders

dcgan = builders.module('synthetic_fingerprints.dcgan')


@pytest.fixture
def fake_torch(monkeypatch):
  """Just enough of torch's module names for pickle to write the globals a state_dict uses."""
  torch = types.ModuleType('torch')
  utils = types.ModuleType('torch._utils')

  class FloatStorage:
    pass

  def _rebuild_tensor_v2(*args):
    raise AssertionError('never called while writing')

  FloatStorage.__module__, FloatStorage.__qualname__ = 'torch', 'FloatStorage'
  _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = 'torch._utils', '_rebuild_tensor_v2'
  torch.FloatStorage, utils._rebuild_tensor_v2, torch._utils = FloatStorage, _rebuild_tensor_v2, utils
  monkeypatch.setitem(sys.modules, 'torch', torch)
  monkeypatch.setitem(sys.modules, 'torch._utils', utils)
  return torch


class _Storage:
  pass


class _Tensor:
  def __init__(self, offset, size, stride):
    self.args = (offset, size, stride)

  def __reduce__(self):
    offset, size, stride = self.args
    return sys.modules['torch._utils']._rebuild_tensor_v2, (
        _STORAGE, offset, size, stride, False, collections.OrderedDict())


_STORAGE = _Storage()


class _Pickler(pickle.Pickler):
  def persistent_id(self, obj):
    if obj is _STORAGE:
      return ('storage', sys.modules['torch'].FloatStorage, '0', 'cpu', 10)
    return None


def _archive(path, payload, values=np.arange(10, dtype=np.float32)):
  buffer = io.BytesIO()
  _Pickler(buffer, protocol=2).dump(payload)
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('ckpt/data.pkl', buffer.getvalue())
    archive.writestr('ckpt/data/0', values.tobytes())
  return path


def test_a_plain_state_dict_loads(tmp_path, fake_torch):
  path = _archive(tmp_path / 'ok.tar', {'netG_state_dict': collections.OrderedDict(
      w=_Tensor(2, (2, 3), (3, 1)))})
  loaded = dcgan.load_state_dict(path)
  np.testing.assert_array_equal(loaded['w'], np.arange(2, 8, dtype=np.float32).reshape(2, 3))


@pytest.mark.parametrize('offset, size, stride', [
    (0, (10,), (1000000,)),   # stride far past the storage: as_strided would read anything
    (8, (5,), (1,)),          # runs off the end
    (-4, (2,), (1,)),         # negative offset
    (0, (3, 3), (4,)),        # rank mismatch
    (0, (2,), (-1,)),         # negative stride
])
def test_tensors_reaching_past_their_storage_are_refused(tmp_path, fake_torch, offset, size, stride):
  path = _archive(tmp_path / 'bad.tar', {'netG_state_dict': {'w': _Tensor(offset, size, stride)}})
  with pytest.raises(ValueError, match='bad.tar'):
    dcgan.load_state_dict(path)


def test_foreign_globals_and_junk_are_refused(tmp_path):
  import os

  class Evil:
    def __reduce__(self):
      return os.system, ('echo pwned > ' + str(tmp_path / 'pwned'),)

  path = _archive(tmp_path / 'evil.tar', {'netG_state_dict': Evil()})
  with pytest.raises(ValueError, match='refusing to load global'):
    dcgan.load_state_dict(path)
  assert not (tmp_path / 'pwned').exists()
  (tmp_path / 'junk.tar').write_bytes(b'not a zip')
  with pytest.raises(ValueError, match='junk.tar'):
    dcgan.load_state_dict(tmp_path / 'junk.tar')
