import hashlib
import json
import pathlib
import shutil

from gta_jax import input_pipeline, provenance


def test_dataset_digest_is_the_builds_bytes_cached_and_renewed_when_a_file_changes(
    smoke_data_dir, tmp_path):
  """The digest identifies a build by its record files' bytes: a copy has the same digest, the
  cache is reused while the files are as they were, and a changed file gives another digest."""
  builder = input_pipeline.load_builder(input_pipeline.BUILTIN, 'smoke', smoke_data_dir)
  original = provenance.dataset_digest(builder)
  assert original['name'] == input_pipeline.BUILTIN and original['config'] == 'smoke'
  assert len(original['sha256']) == 64 and len(original['files']) == len(builder.info.splits)
  copy_dir = tmp_path / 'copy'
  shutil.copytree(smoke_data_dir, copy_dir)
  copied = input_pipeline.load_builder(input_pipeline.BUILTIN, 'smoke', str(copy_dir))
  folder = pathlib.Path(copied.data_dir)
  (folder / provenance.DIGEST_FILE).unlink(missing_ok=True)
  assert provenance.dataset_digest(copied)['sha256'] == original['sha256']
  expected = hashlib.sha256()
  for path in sorted(p for p in folder.iterdir() if '.array_record' in p.name):
    expected.update(path.name.encode() + b'\0' + path.read_bytes())
  assert original['sha256'] == expected.hexdigest()
  cached = json.loads((folder / provenance.DIGEST_FILE).read_text())
  assert cached['sha256'] == original['sha256']
  train_file = next(p for p in folder.iterdir() if 'train.array_record' in p.name)
  data = bytearray(train_file.read_bytes())
  data[len(data) // 2] ^= 0xFF
  train_file.write_bytes(bytes(data))
  assert provenance.dataset_digest(copied)['sha256'] != original['sha256']


def test_compare_builds_names_the_runs_of_each_build():
  def record(digest):
    return {'dataset': {'sha256': digest * 64}}
  assert provenance.compare_builds({'a': record('1'), 'b': record('1'), 'c': None}) is None
  warning = provenance.compare_builds({'a': record('1'), 'b': record('2'), 'c': record('1')})
  assert '2 different builds' in warning
  assert '111111111111: a, c' in warning and '222222222222: b' in warning


def test_machine_names_the_cpu_and_the_numerics_libraries():
  described = provenance.machine()
  assert described['backend'] in ('cpu', 'gpu', 'tpu') and described['jax']
  assert {'cpu_model', 'vector_extensions', 'jaxlib', 'numpy', 'opencv'} <= set(described)
