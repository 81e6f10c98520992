"""Where a run's progress goes: one log line format, and one metric writer for scalars
(TensorBoard event files through tensorboardX, plus one JSON line per write in metrics.jsonl)."""
import json
import pathlib
import time

import numpy as np


def log(message: str) -> None:
  print(f'[gta_jax {time.strftime("%H:%M:%S")}] {message}', flush=True)


def fmt(values) -> str:
  """Scalars or a [K] array -> '0.1234 0.5678' for the progress line."""
  return ' '.join(f'{float(v):.4f}' for v in np.atleast_1d(values))


class MetricWriter:
  """TensorBoard event files (tensorboardX; clu's writers import TensorFlow) plus metrics.jsonl."""

  def __init__(self, workdir: pathlib.Path):
    from tensorboardX import SummaryWriter
    self._tb = SummaryWriter(str(workdir / 'tensorboard'))
    self._lines = open(workdir / 'metrics.jsonl', 'a')

  def scalars(self, step: int, values: dict) -> None:
    values = {k: float(v) for k, v in values.items()}
    for key, value in values.items():
      self._tb.add_scalar(key, value, step)
    self._lines.write(json.dumps({'step': step, **values}) + '\n')
    self._lines.flush()

  def close(self) -> None:
    self._tb.close()
    self._lines.close()
