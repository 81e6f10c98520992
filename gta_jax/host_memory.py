"""glibc malloc settings that stop XLA's CPU buffers being mapped afresh on every step.

XLA's CPU runtime allocates each execution's temporary buffer (a step's activations, gradients
and the outputs of the oneDNN calls) with malloc and frees it afterwards. glibc serves an
allocation above its mmap threshold (at most 32 MiB by its dynamic rule) with a fresh mmap and
unmaps it on free, so every step touches tens of MiB of new pages: one page fault per page, each
zeroing its page. A thread other than the main one allocates from its own arena, whose heaps
hold at most 64 MiB, so a larger buffer is mapped afresh whatever the threshold; XLA allocates
from its worker threads. On the 2-core AMD EPYC Zen 4, with the onednn form, this was a third of
a primary inference step at batch 64 (33 ms a step, 21 ms without the faults) and 40% of its
train step (docs/benchmarks.md).

`apply()` (called by gta_jax/__init__.py on import, before any thread of XLA's exists):
- raises glibc's mmap and trim thresholds to THRESHOLD_BYTES (mallopt), so large buffers come
  from the heap and are reused step after step;
- where the onednn form will be the CPU default (its wheels and a C++ compiler are present, and
  GTA_JAX_ONEDNN is not 0), one malloc arena for all threads, so that XLA's workers allocate from
  the main heap too. Not otherwise: the pure-XLA `cpu` form's convolutions allocate from both
  threads at once and its train step at batch 256 ran a third slower with one arena (at batch
  64: no change), while the onednn form's ran 1.1-1.7x faster.

The cost: memory freed below the threshold stays with the process (its resident size stays near
its peak instead of shrinking between steps); threads that allocate at once take turns on one
lock. Linux with glibc only (elsewhere nothing is set). GTA_JAX_MALLOC_DEFAULTS=0 in the
environment leaves glibc's defaults; a GLIBC_TUNABLES that sets a threshold or the arena count
keeps the user's value for that setting. Measurements: docs/benchmarks.md and
docs/research/2026-12-07-onednn-layers-and-malloc.md.
"""
import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's malloc.h
THRESHOLD_BYTES = 1 << 30
OPT_OUT = 'GTA_JAX_MALLOC_DEFAULTS'


def onednn_expected(environ) -> bool:
  """Whether conv_impl='auto' will pick the onednn form on a CPU (its build needs the wheels and
  a compiler; checked without building)."""
  from gta_jax.models import onednn  # pylint: disable=import-outside-toplevel
  return (environ.get(onednn.OPT_OUT, '1') != '0' and onednn._onednn_root() is not None  # pylint: disable=protected-access
          and onednn._compiler() is not None)  # pylint: disable=protected-access


def settings(environ, with_onednn: bool) -> dict:
  """The mallopt settings apply() makes: {parameter: value}."""
  if environ.get(OPT_OUT, '1') == '0':
    return {}
  tunables = environ.get('GLIBC_TUNABLES', '')
  chosen = {}
  if 'mmap_threshold' not in tunables:
    chosen[M_MMAP_THRESHOLD] = THRESHOLD_BYTES
  if 'trim_threshold' not in tunables:
    chosen[M_TRIM_THRESHOLD] = THRESHOLD_BYTES
  if with_onednn and 'arena_max' not in tunables:
    chosen[M_ARENA_MAX] = 1
  return chosen


def apply(environ=None, with_onednn: bool | None = None) -> dict:
  """Makes `settings` in this process -> those made ({} off Linux/glibc or when opted out)."""
  environ = os.environ if environ is None else environ
  if not sys.platform.startswith('linux') or platform.libc_ver()[0] != 'glibc':
    return {}
  chosen = settings(environ, onednn_expected(environ) if with_onednn is None else with_onednn)
  if not chosen:
    return {}
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return {}
  mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
  return {parameter: value for parameter, value in chosen.items() if mallopt(parameter, value) == 1}
