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
      records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
      kept = [r for r in records if r['step'] < resume_step or (
          r['step'] == resume_step and r.get('epoch', 0) <= validated_epochs)]
      path.write_text(''.join(json.dumps(r) + '\n' for r in kept))
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
