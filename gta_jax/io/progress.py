"""Progress of a long loop (validation, evaluation, the open-set fit, attribute over a folder,
heldout, a sweep's seeds): a tqdm bar when stderr is a terminal, else one log line every
`every_s` seconds with the count, the rate and the time left, so a log file shows a run is alive.

Only the main process reports; the loop's items pass through unchanged.
"""
import sys
import time

from gta_jax.io import distributed
from gta_jax.io.writers import log

EVERY_S = 30.0


def _duration(seconds: float) -> str:
  if seconds < 90:
    return f'{seconds:.0f} s'
  if seconds < 5400:
    return f'{seconds / 60:.1f} min'
  return f'{seconds / 3600:.1f} h'


def progress(iterable, *, total: int | None = None, desc: str = '', unit: str = 'it',
             every_s: float = EVERY_S, terminal: bool | None = None):
  """Yields the items of `iterable`, reporting progress as the module docstring says. `total`
  (the number of items, when known) gives the bar its length and the log lines their ETA;
  `terminal` forces the bar (True) or the log lines (False); None asks stderr."""
  if total is None and hasattr(iterable, '__len__'):
    total = len(iterable)
  if not distributed.is_main_process():
    yield from iterable
    return
  if terminal is None:
    terminal = sys.stderr.isatty()
  if terminal:
    from tqdm import tqdm  # local: only terminals draw bars
    yield from tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
    return
  started = last = time.monotonic()
  done = 0
  for item in iterable:
    yield item
    done += 1
    now = time.monotonic()
    if now - last >= every_s:
      last = now
      rate = done / max(now - started, 1e-9)
      line = f'{desc}: {done}{f"/{total}" if total else ""} {unit} ({rate:.1f} {unit}/s'
      if total:
        line += f', {_duration((total - done) / max(rate, 1e-9))} left'
      log(line + ')')
