"""Helpers shared by the benchmark scripts: timing, the machine's matmul peak, JSON output."""
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np


def time_fn(fn, *args, repeats: int = 5, min_seconds: float = 2.0):
  """Median seconds per call of an already-compiled function (blocks on the result)."""
  jax.block_until_ready(fn(*args))
  samples = []
  start = time.perf_counter()
  while len(samples) < repeats or time.perf_counter() - start < min_seconds:
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    samples.append(time.perf_counter() - t)
    if len(samples) >= 50:
      break
  samples.sort()
  return samples[len(samples) // 2]


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of `repeats` calls of fn() after one warm-up call (which compiles)."""
  fn()
  samples = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    samples.append(time.perf_counter() - start)
  return float(np.median(samples))


def matmul_peak_gflops(n: int = 2048) -> float:
  """Measured float32 matmul throughput of this device: the ceiling for conv-as-matmul work."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  return 2 * n ** 3 / time_fn(f, a) / 1e9


def flops_of(jitted, *args) -> float | None:
  """XLA's own FLOP count for one call (None where the backend does not report it)."""
  try:
    analysis = jitted.lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):
      analysis = analysis[0]
    return float(analysis.get('flops', 0)) or None
  except Exception:  # cost analysis is best-effort on some backends
    return None


def machine() -> dict:
  """The machine a ratio holds for: backend, device, CPU model and vector extensions, library
  versions (the same record every run writes to provenance.json)."""
  from gta_jax.io import provenance
  return provenance.machine()


def write_json(path, record: dict) -> None:
  if path:
    pathlib.Path(path).write_text(json.dumps(record, indent=2) + '\n')
  print(json.dumps(record, indent=2))
