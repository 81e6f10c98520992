"""The project's own errors. Each message names the file, key or value at fault and what to do,
so the commands print it in one line; any other exception is a bug and keeps its traceback
(GTA_JAX_TRACEBACK=1 shows the traceback of these too)."""


class UserError(Exception):
  """Bad input, config or order of runs: the user can fix it from the message."""


class ConfigError(UserError, ValueError):
  """A config value (or an argument) that cannot work."""


class MissingRunError(UserError, FileNotFoundError):
  """A run, bundle or file that a command needs is not there (yet)."""


class TrainingDiverged(UserError, FloatingPointError):
  """The loss became NaN or infinite."""
