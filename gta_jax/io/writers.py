"""Where a run's progress goes: one log line format, and one metric writer for scalars
(TensorBoard event files through tensorboardX, plus one JSON line per write in metrics.jsonl)."""
import json
import pathlib
import time

import numpy as np

_silent = False


def silence() -> None:
  """Processes other than 0 of a multi-process run print nothing (gta_jax/io/distributed.py)."""
  global _silent
  _silent = True


def log(message: str) -> None:
  if _silent:
    return
  print(f'[gta_jax {time.strftime("%H:%M:%S")}] {message}', flush=True)


def fmt(values) -> str:
  """Scalars or a [K] array -> '0.1234 0.5678' for the progress line."""
  return ' '.join(f'{float(v):.4f}' for v in np.atleast_1d(values))


def write_text_atomic(path, text: str) -> None:
  """Writes `text` through a temporary file beside `path` and an atomic rename (outputs.staged):
  a reader (or a run killed mid-write) never leaves half a file."""
  from gta_jax.io import outputs  # local: outputs' checks are for tools, this module for runs
  with outputs.staged(path) as staging:
    staging.write_text(text)


def write_json_atomic(path, value) -> None:
  write_text_atomic(path, json.dumps(value, indent=2) + '\n')


def read_json_lines(path) -> list[dict]:
  """metrics.jsonl's records. A line that is not a JSON object (the torn last line of a run
  killed while writing it) is dropped with a warning naming it, not a crash that blocks resume."""
  path = pathlib.Path(path)
  records = []
  for number, line in enumerate(path.read_text(errors='replace').splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError:
      record = None
    if not isinstance(record, dict) or not isinstance(record.get('step'), int):
      log(f'warning: {path} line {number} is not a whole record (a write cut short?); dropped.')
      continue
    records.append(record)
  return records


class MetricWriter:
  """TensorBoard event files (tensorboardX; clu's writers import TensorFlow) plus metrics.jsonl."""

  def __init__(self, workdir: pathlib.Path, resume_step: int = 0, validated_epochs: int = 0):
    """resume_step, validated_epochs: where a resumed run starts again; metrics.jsonl keeps only
    the lines before it, so that the lines logged again are not there twice."""
    self._enabled = not _silent  # process 0 of a multi-process run writes
    if not self._enabled:
      return
    from tensorboardX import SummaryWriter
    self._tb = SummaryWriter(str(workdir / 'tensorboard'))
    path = workdir / 'metrics.jsonl'
    if path.is_file():
      records = read_json_lines(path)
      kept = [r for r in records if r['step'] < resume_step or (
          r['step'] == resume_step and r.get('epoch', 0) <= validated_epochs)]
      write_text_atomic(path, ''.join(json.dumps(r) + '\n' for r in kept))
    self._lines = open(path, 'a')

  def scalars(self, step: int, values: dict, *, record: bool = True) -> None:
    """record=False: TensorBoard only. Wall-clock figures (images/s) go there alone, so that
    metrics.jsonl holds what a resumed run reproduces exactly."""
    if not self._enabled:
      return
    values = {k: float(v) for k, v in values.items()}
    for key, value in values.items():
      self._tb.add_scalar(key, value, step)
    if record:
      self._lines.write(json.dumps({'step': step, **values}) + '\n')
      self._lines.flush()

  def close(self) -> None:
    if not self._enabled:
      return
    self._tb.close()
    self._lines.close()
