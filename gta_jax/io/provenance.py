"""What a run's figures depend on besides its config: the exact dataset build and the machine.

The built-in data is generated on the machine that first opens it (small auto-encoders trained
there); a machine with other floating-point kernels could build other fakes, and a seed then
gives other figures (docs/training.md, reproducibility). A run therefore records the digest of the
images it trained on and the machine beside its config (`provenance.json`), and a sweep says
when its seeds do not share one build.
"""
import hashlib
import json
import os
import pathlib
import platform

import numpy as np

from gta_jax.data import pipeline

DIGEST_FILE = 'build_digest.json'  # cached beside the prepared dataset's files
DIGEST_OF = 'decoded records'  # what `sha256` covers; a cache of another kind is recomputed


def dataset_digest(builder) -> dict:
  """{name, config, version, sha256, digest_of, files} of a prepared TFDS build: SHA-256 over its
  decoded records, split by split in name order, each record's features in key order (dtype,
  shape and bytes). Not over the files: TFDS writes a record's features in an order that varies
  from process to process, so two builds of the same images differ in their bytes. Cached in the
  build's folder and recomputed when a file's size or modification time differs from the
  cache's (`files`)."""
  folder = pathlib.Path(builder.data_dir)
  cache = folder / DIGEST_FILE
  files = sorted(p for p in folder.iterdir() if '.array_record' in p.name or '.tfrecord' in p.name)
  listing = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}
  if cache.is_file():
    cached = json.loads(cache.read_text())
    if cached.get('files') == listing and cached.get('digest_of') == DIGEST_OF:
      return cached
  digest = hashlib.sha256()
  for split in sorted(builder.info.splits):
    source = pipeline.data_source(builder, split)
    digest.update(f'{split}\0{len(source)}\0'.encode())
    for index in range(len(source)):
      record = source[index]
      for key in sorted(record):
        value = np.asarray(record[key])
        digest.update(f'{key}\0{value.dtype.str}\0{value.shape}\0'.encode())
        digest.update(value.tobytes())
  record = {'name': builder.name, 'config': builder.builder_config.name if builder.builder_config
            else None, 'version': str(builder.version), 'sha256': digest.hexdigest(),
            'digest_of': DIGEST_OF, 'files': listing}
  try:
    cache.write_text(json.dumps(record, indent=2) + '\n')
  except OSError:  # a read-only dataset folder: recompute next time
    pass
  return record


VECTOR_EXTENSIONS = ('sse4_2', 'avx', 'avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16',
                     'amx_tile')


def cpu_description() -> dict:
  """CPU model, its family/model/stepping (a virtual machine may name only "AMD EPYC", which
  spans several generations) and the vector extensions XLA's CPU code can use."""
  model, flags, ids = platform.processor() or 'unknown', set(), {}
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      key, _, value = line.partition(':')
      if key.strip() == 'model name':
        model = value.strip()
      elif key.strip() == 'flags':
        flags = set(value.split())
      elif key.strip() in ('cpu family', 'model', 'stepping'):
        ids.setdefault(key.strip(), value.strip())
  except OSError:
    pass
  return {'cpu_model': model,
          'cpu_family_model_stepping': '/'.join(ids.get(k, '?') for k in ('cpu family', 'model',
                                                                          'stepping')),
          'vector_extensions': [f for f in VECTOR_EXTENSIONS if f in flags]}


def machine() -> dict:
  """Backend, device, CPU and the versions of the libraries whose numerics a run depends on."""
  import cv2
  import flax
  import jax
  import jaxlib
  import numpy
  device = jax.devices()[0]
  return {'backend': jax.default_backend(), 'device': getattr(device, 'device_kind', str(device)),
          'device_count': jax.device_count(), 'cpu_count': os.cpu_count(), **cpu_description(),
          'python': platform.python_version(), 'jax': jax.__version__,
          'jaxlib': jaxlib.__version__, 'flax': flax.__version__, 'numpy': numpy.__version__,
          'opencv': cv2.__version__}


def run_provenance(dataset) -> dict:
  """-> {'dataset': dataset_digest, 'machine': machine()} for a run's provenance.json."""
  return {'dataset': dataset_digest(dataset.builder), 'machine': machine()}


def head_origin(run_dir, trained_steps: int = 0, best_epoch: int | None = None) -> dict:
  """Where a head was trained, from its run's records (config.json, provenance.json): what a
  model bundle keeps per head, so that a head composed into another model still names its run,
  config and dataset build (gta_jax/io/composition.py). Records a run lacks are left out."""
  run_dir = pathlib.Path(run_dir)
  origin = {'run': str(run_dir.absolute())}
  try:
    origin['config'] = json.loads((run_dir / 'config.json').read_text()).get('name')
  except (OSError, ValueError, AttributeError):
    pass
  try:
    dataset = json.loads((run_dir / 'provenance.json').read_text())['dataset']
    origin['dataset'] = {k: dataset[k] for k in ('name', 'config', 'sha256')}
  except (OSError, ValueError, KeyError, TypeError):
    pass
  origin['trained_steps'] = int(trained_steps)
  if best_epoch is not None:
    origin['best_epoch'] = int(best_epoch)
  return origin


def compare_builds(records: dict) -> str | None:
  """{run name: provenance record} -> a warning naming the runs whose dataset builds differ, or
  None when all that have a record share one build."""
  by_digest: dict[str, list[str]] = {}
  for name, record in records.items():
    if record:
      by_digest.setdefault(record['dataset']['sha256'][:12], []).append(name)
  if len(by_digest) <= 1:
    return None
  groups = '; '.join(f'{digest}: {", ".join(names)}' for digest, names in by_digest.items())
  return (f'these runs trained on {len(by_digest)} different builds of the dataset ({groups}); '
          'their spread mixes seed and build (docs/training.md, reproducibility).')
