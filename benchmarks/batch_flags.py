"""What the per-batch device-vs-host benchmarks (jpeg_jax.py, augment_jax.py) share: their flags,
and --one_thread, which must reach XLA_FLAGS before JAX starts, so this module is imported before
anything that imports JAX (it imports no JAX itself)."""
import os
import sys

from absl import flags

if '--one_thread' in sys.argv:  # XLA's CPU backend on one thread: a per-core figure
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1')

flags.DEFINE_string('json', None, 'write the results here')
flags.DEFINE_integer('batch', 64, 'images per call')
flags.DEFINE_integer('size', 128, 'image side (px)')
flags.DEFINE_integer('repeats', 7, 'measurements; the median is reported')
flags.DEFINE_bool('one_thread', False, 'XLA on one CPU thread (per-core figure)')
FLAGS = flags.FLAGS
