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
def locked(workdir, what: str, enabled: bool = True, agree=None):
  """Holds WORKDIR's lock while the block runs; raises WorkdirBusy naming the holder's pid when
  another process has it. Re-entrant within a process (a chain's phases, an evaluation inside a
  training): a folder this process already holds is not locked again. `enabled=False` (the other
  processes of a multi-process run) takes nothing; `agree(ok) -> process 0's ok`
  (distributed.main_process_says), called on every process, makes them all stop when process 0
  could not take it, instead of waiting for it at their first collective."""
  workdir = pathlib.Path(workdir)
  key = os.path.realpath(workdir)
  if key in _held or not workdir.is_dir():  # no folder: no run to protect (a typo is the
    yield                                   # caller's to name)
    return
  handle, busy = None, None
  if enabled:
    try:
      handle = open(workdir / LOCK_FILE, 'a+')
    except OSError as e:
      raise errors.ConfigError(f'{workdir}: cannot open its lock file {LOCK_FILE} '
                               f'({e.strerror}).') from None
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      busy = (f'{workdir} is in use by {_holder(handle)}. Two processes in one run folder would '
              'corrupt it: wait for that one to end (or stop it), or give this one another '
              '--workdir.')
      handle.close()
      handle = None
  if agree is not None and not agree(busy is None) and busy is None:
    busy = f'{workdir} is in use by another run (process 0 of this run could not lock it).'
  if busy:
    raise WorkdirBusy(busy)
  _held.add(key)
  try:
    if handle is not None:
      handle.seek(0)
      handle.truncate()
      handle.write(f'pid {os.getpid()} ({what}: {" ".join(sys.argv[:1])})\n')
      handle.flush()
    yield
  finally:
    _held.discard(key)
    if handle is not None:
      handle.seek(0)
      handle.truncate()
      handle.flush()
      fcntl.flock(handle, fcntl.LOCK_UN)
      handle.close()


_held: set[str] = set()
