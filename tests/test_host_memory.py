"""gta_jax/host_memory.py: glibc keeps large freed buffers for reuse (no page faults per step)."""
import platform
import subprocess
import sys

import pytest

from gta_jax import host_memory

GLIBC = sys.platform.startswith('linux') and platform.libc_ver()[0] == 'glibc'


def test_settings_honour_the_opt_out_the_users_tunables_and_the_form():
  both = {host_memory.M_MMAP_THRESHOLD: host_memory.THRESHOLD_BYTES,
          host_memory.M_TRIM_THRESHOLD: host_memory.THRESHOLD_BYTES}
  assert host_memory.settings({}, with_onednn=False) == both
  assert host_memory.settings({}, with_onednn=True) == both | {host_memory.M_ARENA_MAX: 1}
  assert host_memory.settings({host_memory.OPT_OUT: '0'}, with_onednn=True) == {}
  tunables = {'GLIBC_TUNABLES': 'glibc.malloc.mmap_threshold=65536:glibc.malloc.arena_max=4'}
  assert host_memory.settings(tunables, with_onednn=True) == {
      host_memory.M_TRIM_THRESHOLD: host_memory.THRESHOLD_BYTES}
  if GLIBC:
    assert host_memory.apply({}, with_onednn=False) == both


def test_one_arena_only_where_the_onednn_form_will_be_the_default(monkeypatch):
  from gta_jax.models import onednn  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(onednn, '_compiler', lambda: None)
  assert not host_memory.onednn_expected({})
  monkeypatch.setattr(onednn, '_compiler', lambda: '/usr/bin/g++')
  monkeypatch.setattr(onednn, '_onednn_root', lambda: '/venv')
  assert host_memory.onednn_expected({})
  assert not host_memory.onednn_expected({onednn.OPT_OUT: '0'})


# In a fresh process: a 96 MiB buffer (main thread) and a 48 MiB one (another thread) allocated,
# touched and freed four times. With the setting
# the later rounds reuse the first's pages (no page faults); with glibc's defaults every round
# maps fresh pages.
_FAULTS = '''
import resource
import threading
import numpy as np
import gta_jax
counts = []
def touch(megabytes):
  buffer = np.empty(megabytes << 20, np.uint8)
  buffer[::4096] = 1
def on_thread():  # as XLA allocates: from a worker thread, within its arena's 64 MiB heaps
  thread = threading.Thread(target=touch, args=(48,))
  thread.start()
  thread.join()
for _ in range(4):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  touch(96)
  on_thread()
  counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(counts[0], max(counts[1:]))
'''


@pytest.mark.slow
@pytest.mark.skipif(not GLIBC, reason='glibc only')
def test_freed_large_buffers_are_reused_without_page_faults():
  def faults(**env):
    import os  # pylint: disable=import-outside-toplevel
    out = subprocess.run([sys.executable, '-c', _FAULTS], capture_output=True, text=True,
                         check=True, env={**os.environ, **env}).stdout.split()
    return int(out[0]), int(out[1])
  first, later = faults()
  # (transparent huge pages: 2 MiB a fault where the kernel gives them, 4 KiB elsewhere)
  assert first > 40 and later < 10, (first, later)
  first, later = faults(**{host_memory.OPT_OUT: '0'})
  assert later > 40, later  # glibc's default maps every round afresh
