"""gta_jax/xla_flags.py: the CPU switches set before JAX starts, the user's own flags kept."""
import os
import subprocess
import sys

import pytest

from gta_jax import xla_flags

FLAG = '--xla_cpu_experimental_ynn_fusion_type'


def test_defaults_go_first_and_the_users_flags_stay():
  assert xla_flags.with_cpu_defaults('') == f'{FLAG}=-individual_convolution'
  assert (xla_flags.with_cpu_defaults('--xla_force_host_platform_device_count=4') ==
          f'{FLAG}=-individual_convolution --xla_force_host_platform_device_count=4')
  # A flag the user names is left as given, value and place.
  assert (xla_flags.with_cpu_defaults(f'--a=1 {FLAG}=-reduce') == f'--a=1 {FLAG}=-reduce')
  assert xla_flags.with_cpu_defaults(f'{FLAG}=') == f'{FLAG}='  # YNNPACK off, as asked
  once = xla_flags.with_cpu_defaults('--a=1')
  assert xla_flags.with_cpu_defaults(once) == once


def test_apply_honours_the_opt_out_and_the_tested_versions():
  env = {'XLA_FLAGS': '--a=1'}
  assert xla_flags.apply(env, jaxlib_version='0.10.2')
  assert env['XLA_FLAGS'] == f'{FLAG}=-individual_convolution --a=1'
  env = {'XLA_FLAGS': '--a=1', xla_flags.OPT_OUT: '0'}
  assert not xla_flags.apply(env, jaxlib_version='0.10.2') and env['XLA_FLAGS'] == '--a=1'
  env = {}
  assert not xla_flags.apply(env, jaxlib_version='0.11.0') and 'XLA_FLAGS' not in env


_PROBE = """
import gta_jax, os, jax, jax.numpy as jnp
x = jnp.zeros((8, 32, 32, 32)); w = jnp.zeros((3, 3, 32, 32))
conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
print(os.environ.get('XLA_FLAGS', ''))
print('__ynn_fusion' in jax.jit(conv).lower(x, w).compile().as_text())
"""


@pytest.mark.slow
@pytest.mark.parametrize('opt_out', [False, True])
def test_importing_gta_jax_takes_convolutions_off_ynnpack_on_the_cpu(opt_out):
  """In a fresh process (XLA reads the flags once): importing gta_jax before any computation
  routes a 32-channel convolution to XLA's own kernels; with GTA_JAX_XLA_DEFAULTS=0 it stays on
  YNNPACK, XLA's default (so the check can fail)."""
  env = {k: v for k, v in os.environ.items()
         if k not in ('XLA_FLAGS', 'JAX_DISABLE_MOST_OPTIMIZATIONS', xla_flags.OPT_OUT)}
  env['JAX_PLATFORMS'] = 'cpu'
  if opt_out:
    env[xla_flags.OPT_OUT] = '0'
  out = subprocess.run([sys.executable, '-c', _PROBE], env=env, capture_output=True, text=True,
                       check=True).stdout.split('\n')
  assert (FLAG in out[0]) is not opt_out
  assert out[1] == str(opt_out)
