"""The project's own errors. Each message names the file, key or value at fault and what to do,
so the commands print it in one line; any other exception is a bug and keeps its traceback
(GTA_JAX_TRACEBACK=1 shows the traceback of these too)."""


class UserError(Exception):
  """Bad input, config or order of runs: the user can fix it from the message."""


class UsageError(UserError):
  """A command-line argument that cannot work (exit status 2)."""


class ConfigError(UserError, ValueError):
  """A config value (or an argument) that cannot work."""


class MissingRunError(UserError, FileNotFoundError):
  """A run, bundle or file that a command needs is not there (yet)."""


class TrainingDiverged(UserError, FloatingPointError):
  """The loss became NaN or infinite."""


def check_writable_folder(directory, what: str) -> None:
  """Creates `directory` if needed and proves it writable with a probe file (os.access says yes to
  root on read-only mounts): outputs are checked before any work, never found unwritable after."""
  import pathlib  # local: this module stays free of imports for the commands that catch its errors
  directory = pathlib.Path(directory)
  import os
  probe = directory / f'.gta_jax_writable-{os.getpid()}'  # processes of one run may share it
  try:
    directory.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise ConfigError(f'{what} {directory}: cannot create the folder ({e.strerror}).') from None
  try:
    probe.write_text('')
    probe.unlink()
  except OSError as e:
    raise ConfigError(f'{what} {directory}: the folder is not writable ({e.strerror}).') from None
