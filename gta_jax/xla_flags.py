"""XLA settings for the CPU backend that measured faster, placed in XLA_FLAGS before JAX starts.

XLA reads XLA_FLAGS once, when its first backend starts (the first computation or device query,
not `import jax`), so `gta_jax/__init__.py` calls `apply()` on import: every entry point
(launch.py, the gta-* tools, the tests, a notebook that imports gta_jax before computing
anything) runs with them. A process whose backend started before gta_jax was imported keeps
XLA's own defaults; nothing breaks.

- A flag the user's XLA_FLAGS names already is left as the user set it.
- GTA_JAX_XLA_DEFAULTS=0 in the environment adds none (benchmarks/xla_switches.py runs its
  configurations so, to compare against XLA's own defaults).
- They are added only for the jaxlib versions they were measured on (TESTED_JAXLIB): XLA aborts
  on a flag it does not know, and these are experimental ones that may be renamed.
- XLA's CPU compiler is the only reader: a GPU's programs are compiled without them.

CPU_DEFAULTS and the measurements behind each: docs/benchmarks.md (XLA switches) and
docs/research/2026-12-07-cpu-switches-and-bf16.md.
"""
import os

# --xla_cpu_experimental_ynn_fusion_type=-individual_convolution: convolutions go to XLA's own
# (Eigen) kernels instead of YNNPACK's. The train step of the `cpu` form (the CPU default) is
# 1.06-1.12x faster on an AMD EPYC Zen 4 (pixel and DCT, batch 64 and 256) and faster on the
# Intel Xeon measured before; its first step is bit-identical (pixel) or within float rounding
# (DCT, loss 1.2e-7 apart).
CPU_DEFAULTS = {'--xla_cpu_experimental_ynn_fusion_type': '-individual_convolution'}
TESTED_JAXLIB = ('0.10.',)  # version prefixes
OPT_OUT = 'GTA_JAX_XLA_DEFAULTS'


def with_cpu_defaults(flags: str) -> str:
  """An XLA_FLAGS value -> the same with CPU_DEFAULTS first, less those the value names already."""
  given = flags.split()
  named = {flag.split('=', 1)[0] for flag in given}
  return ' '.join([f'{name}={value}' for name, value in CPU_DEFAULTS.items()
                   if name not in named] + given)


def _jaxlib_version() -> str:
  try:
    from jaxlib import version  # pylint: disable=g-import-not-at-top
    return version.__version__
  except ImportError:
    return ''


def apply(environ=None, jaxlib_version: str | None = None) -> bool:
  """Adds CPU_DEFAULTS to environ['XLA_FLAGS'] (os.environ by default); True if it did."""
  environ = os.environ if environ is None else environ
  jaxlib_version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  if environ.get(OPT_OUT, '1') == '0' or not jaxlib_version.startswith(TESTED_JAXLIB):
    return False
  environ['XLA_FLAGS'] = with_cpu_defaults(environ.get('XLA_FLAGS', ''))
  return True
