"""One process at a time in a run's folder: an exclusive lock held for the whole of a training
(resume, steps, export, evaluation, open-set fit) or of a tool that writes into a finished run.

The lock is `fcntl.flock` on WORKDIR/.gta_jax.lock. The kernel releases it when the holding
process ends, however it ends (a kill -9 included), so an interrupted run resumes with no stale
lock to delete; the file stays (deleting it would let a third process lock a new file while a
second still holds the old one). The holder writes its pid and what it does into the file, so a
second process is told who holds it. Local file systems only: on NFS, flock may lock nothing
(Linux emulates it with POSIX locks there, which work; other clients' kernels may not honour it).

In a multi-process run (gta_jax/io/distributed.py) process 0 holds it for all of them.
"""
import contextlib
import fcntl
import os
import pathlib
import sys

from gta_jax import errors

LOCK_FILE = '.gta_jax.lock'


class WorkdirBusy(errors.UserError):
  """Another process holds the run folder."""


def _holder(handle) -> str:
  handle.seek(0)
  text = handle.read().strip()
  return text or 'another process (it wrote no pid yet)'


@contextlib.contextmanager
def locked(workdir, what: str, enabled: bool = True):
  """Holds WORKDIR's lock while the block runs; raises WorkdirBusy naming the holder's pid when
  another process has it. Re-entrant within a process (a chain's phases, an evaluation inside a
  training): a folder this process already holds is not locked again. `enabled=False` (the other
  processes of a multi-process run) takes nothing."""
  workdir = pathlib.Path(workdir)
  key = os.path.realpath(workdir)
  if not enabled or key in _held:
    yield
    return
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / LOCK_FILE
  try:
    handle = open(path, 'a+')
  except OSError as e:
    raise errors.ConfigError(f'{workdir}: cannot open its lock file {path.name} ({e.strerror}).'
                             ) from None
  try:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirBusy(f'{workdir} is in use by {_holder(handle)}. Two processes in one run '
                        'folder would corrupt it: wait for that one to end (or stop it), or give '
                        'this one another --workdir.') from None
    handle.seek(0)
    handle.truncate()
    handle.write(f'pid {os.getpid()} ({what}: {" ".join(sys.argv[:1])})\n')
    handle.flush()
    _held.add(key)
    try:
      yield
    finally:
      _held.discard(key)
      handle.seek(0)
      handle.truncate()
      handle.flush()
      fcntl.flock(handle, fcntl.LOCK_UN)
  finally:
    handle.close()


_held: set[str] = set()
