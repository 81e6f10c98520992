"""What the absl commands (launch.py, gta_jax.sweep) share: a mistyped --config.<key> and our own
errors as one line, interrupts as a hint to resume, anything else with its traceback."""
import os
import sys

from absl import app, flags


def parse_flags(argv):
  """absl's flag parsing, with a mistyped --config.<key> (ml_collections raises AttributeError
  with a "did you mean" hint while the flags are parsed) as a one-line error."""
  try:
    return flags.FLAGS(argv)
  except AttributeError as e:
    message = str(e.args[0] if e.args else e).replace('\\n', ' ').replace('\n', ' ')
    message = message.strip('\'').replace("\\'", "'")
    sys.exit(f'error: bad config override: {message}')
  except flags.Error as e:
    sys.exit(f'error: {e}')


def run(main) -> None:
  """app.run(main): our UserErrors name the file, key or value and what to do, so the traceback
  adds nothing for a user; anything else is a bug and keeps its traceback (GTA_JAX_TRACEBACK=1
  shows it for ours too)."""
  from gta_jax.errors import UserError
  try:
    app.run(main, flags_parser=parse_flags)
  except UserError as e:
    if os.environ.get('GTA_JAX_TRACEBACK'):
      raise
    sys.exit(f'error: {e}')
  except KeyboardInterrupt:
    sys.exit('interrupted: the last checkpoint is saved; run the same command to resume.')
