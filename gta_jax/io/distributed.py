"""Where arrays live: one mesh over every device of every process, batches split along its `data`
axis, everything else (train state, frozen primary, DCT statistics) replicated.

The jitted steps are the same on 1 device and on many: sharding is a property of their inputs,
and XLA inserts the collectives (BatchNorm's batch statistics and the gradients are means over the
global batch, as on one device). Each process feeds only its own rows of every global batch
(`process_rows`); `to_host` brings results back whole to every process.

Several processes: `initialize` (called by launch.py's --coordinator_address / --num_processes /
--process_id flags) starts jax.distributed before any array exists.
"""
import contextlib
import os

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np

from gta_jax import errors
from gta_jax.io import writers

DATA_AXIS = 'data'
_mesh: Mesh | None = None


# Launchers whose environment jax.distributed.initialize() reads by itself: variable -> tasks.
CLUSTER_TASKS = ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE')


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins this process to a multi-process run before any array exists: with all three given,
  or with none under a launcher jax.distributed detects (SLURM or Open MPI with more than one
  task). One process needs neither. On the CPU the processes' collectives go through gloo.
  Processes other than 0 print nothing."""
  given = [v is not None for v in (coordinator_address, num_processes, process_id)]
  if any(given) and not all(given):
    raise errors.ConfigError('--coordinator_address, --num_processes and --process_id go together '
                             '(e.g. --coordinator_address=host0:1234 --num_processes=2 '
                             '--process_id=0); give all three or none.')
  if all(given):
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise errors.ConfigError(f'--process_id={process_id} must be in [0, --num_processes='
                               f'{num_processes}).')
  elif not any(int(os.environ.get(name, '1') or 1) > 1 for name in CLUSTER_TASKS):
    return
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  # The first collective sets up the processes' connections (gloo's on the CPU), and gloo gives
  # a process 30 s to join it: a later first collective that one process reaches long after
  # another (process 0 computing DCT statistics alone, or compiling what another process had
  # cached) failed with "Gloo context initialization failed". Every process is here together
  # (jax.distributed.initialize returns once all have joined); once set up, collectives wait.
  wait_for_all('gta_jax: processes joined')
  if jax.process_index() != 0:
    writers.silence()


def mesh() -> Mesh:
  """The run's 1-D device mesh (every device, in jax.devices() order) unless `using_devices`
  chose others."""
  global _mesh
  if _mesh is None:
    _mesh = Mesh(np.asarray(jax.devices()), (DATA_AXIS,))
  return _mesh


@contextlib.contextmanager
def using_devices(devices):
  """Runs the enclosed code on a mesh of `devices` (tests compare 1 device with 4 in one process)."""
  global _mesh
  saved, _mesh = _mesh, Mesh(np.asarray(devices), (DATA_AXIS,))
  try:
    yield _mesh
  finally:
    _mesh = saved


def num_devices() -> int:
  return mesh().devices.size


def is_main_process() -> bool:
  """Only process 0 logs and writes reports, records and model.json."""
  return jax.process_index() == 0


def check_batch_size(batch_size: int, key: str) -> None:
  """A global batch must split evenly over the devices (and so over the processes)."""
  if batch_size % num_devices():
    raise errors.ConfigError(f'config.{key}={batch_size} does not divide by the {num_devices()} '
                             f'devices; use a multiple of {num_devices()}.')


def process_rows(batch_size: int) -> tuple[int, int]:
  """The rows [start, stop) of a global batch that this process reads and feeds."""
  rows = batch_size // jax.process_count()
  return jax.process_index() * rows, (jax.process_index() + 1) * rows


def _batch_sharding(ndim: int, batch_axis: int) -> NamedSharding:
  spec = [None] * ndim
  spec[batch_axis] = DATA_AXIS
  return NamedSharding(mesh(), PartitionSpec(*spec))


def shard(tree, batch_axis: int = 0):
  """This process's rows of a global batch (numpy leaves, the batch on `batch_axis`) -> global
  arrays split over the mesh's devices along that axis."""
  def put(leaf):
    leaf = np.asarray(leaf)
    return jax.make_array_from_process_local_data(
        _batch_sharding(leaf.ndim, batch_axis % leaf.ndim), leaf)
  return jax.tree.map(put, tree)


def replicate(tree):
  """The same value on every device of the mesh (train state, frozen constants, flags)."""
  sharding = NamedSharding(mesh(), PartitionSpec())

  def put(leaf):
    if not (isinstance(leaf, jax.Array) and not leaf.is_fully_addressable):
      leaf = np.asarray(leaf)  # a host value, the same on every process
    return jax.device_put(leaf, sharding)
  return jax.tree.map(put, tree)


def to_host(tree):
  """Global arrays -> numpy, whole on every process (a collective when there are several)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)

  def fetch(leaf):
    if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
      return jax.device_get(leaf)
    if leaf.is_fully_replicated:  # every process holds the whole value already
      return np.asarray(leaf.addressable_data(0))
    return multihost_utils.process_allgather(leaf, tiled=True)
  return jax.tree.map(fetch, tree)


def gather_rows(tree, batch_axis: int = 0):
  """Each process's rows of a host batch (numpy) -> the whole global batch, on every process."""
  if jax.process_count() == 1:
    return tree
  return jax.tree.map(lambda leaf: np.concatenate(list(leaf), axis=batch_axis),
                      multihost_utils.process_allgather(tree))


def wait_for_all(name: str) -> None:
  """A barrier: every process reaches `name` before any goes on (after process 0 wrote a file
  the others read)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def main_process_says(flag: bool) -> bool:
  """Process 0's `flag` on every process (one collective; `flag` as is with one process): the
  processes of a run take one decision, e.g. that process 0 holds the workdir's lock."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(bool(flag))))
