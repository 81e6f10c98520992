"""What every command-line tool shares: one exit-status rule, one error format; the
output guard and writes are gta_jax/io/outputs.py.

Exit status, for every tool: 0 done; 1 done, but some inputs could not be used (each named);
2 a usage error (bad flag, missing run, a config that cannot work), named in one line.
Our UserErrors name the file, key or value and what to do, so their traceback adds nothing for a
user (GTA_JAX_TRACEBACK=1 shows it); anything else is a bug and keeps its traceback.

The tools that take a config file with `--config.<key>=` overrides (launch.py, sweep) parse their
flags with absl (ml_collections' config flags need it); the others with argparse. Both end here.
"""
import contextlib
import os
import sys

from absl import app
from absl import flags

from gta_jax import errors
from gta_jax.data.images import printable
from gta_jax.io import outputs

OK, SOME_FAILED, USAGE = 0, 1, 2


def run_tool(body, *args) -> int:
  """body(*args) -> its exit status (OK or SOME_FAILED); a UserError -> USAGE with its message;
  Ctrl-C -> 130 with a hint."""
  try:
    return body(*args)
  except errors.UserError as e:
    if os.environ.get('GTA_JAX_TRACEBACK'):
      raise
    print(f'error: {printable(e)}', file=sys.stderr)
    return USAGE
  except KeyboardInterrupt:
    print('interrupted.', file=sys.stderr)
    return 130


@contextlib.contextmanager
def usage_errors():
  """While a tool reads what its flags name (a model, a folder): a missing file or a value that
  cannot be read is the user's to fix (exit 2), not a bug."""
  try:
    yield
  except (FileNotFoundError, ValueError) as e:
    if isinstance(e, errors.UserError):
      raise
    raise errors.UsageError(printable(e)) from e


def same_file(a, b) -> bool:
  try:
    return os.path.samefile(a, b)
  except OSError:
    return False


def write_json(path, value, tool: str | None = None) -> None:
  """Writes `value` through a temporary file and an atomic rename: a reader never sees half.
  Marked as `tool`'s output when given (gta_jax/io/outputs.py, which guards outputs too)."""
  outputs.write_json(path, value, tool)


# ------------------------------------------------------------------------ absl (config) tools


def parse_flags(argv):
  """absl's flag parsing, with a mistyped --config.<key> (ml_collections raises AttributeError
  with a "did you mean" hint while the flags are parsed) as a one-line error (exit 2). --help
  prints the tool's docstring and its own flags and exits 0 (absl's would show only the flags of
  the script that started, none for a console script, and exit 1)."""
  if any(arg in ('-h', '--help', '-?') for arg in argv[1:]):
    module = flags.FLAGS.find_module_defining_flag('config')
    source = sys.modules.get(module) or sys.modules['__main__']  # a script registers as its path
    print((source.__doc__ or '').strip() + '\n')
    print(flags.FLAGS.module_help(module))
    sys.exit(OK)
  try:
    return flags.FLAGS(argv)
  except AttributeError as e:
    message = str(e.args[0] if e.args else e).replace('\\n', ' ').replace('\n', ' ')
    message = message.strip('\'').replace("\\'", "'")
    print(f'error: bad config override: {message}', file=sys.stderr)
    sys.exit(USAGE)
  except flags.Error as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(USAGE)


def run(main) -> None:
  """app.run(main) with the exit-status rule above; an interrupted training says how to resume."""
  try:
    app.run(main, flags_parser=parse_flags)
  except errors.UserError as e:
    if os.environ.get('GTA_JAX_TRACEBACK'):
      raise
    print(f'error: {printable(e)}', file=sys.stderr)
    sys.exit(USAGE)
  except KeyboardInterrupt:
    print('interrupted: the last checkpoint is saved; run the same command to resume.',
          file=sys.stderr)
    sys.exit(130)
