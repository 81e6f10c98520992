import json
import pathlib
import shutil

from gta_jax.data import pipeline
from gta_jax.io import provenance


def test_dataset_digest_is_the_builds_records_not_its_bytes(smoke_data_dir, tmp_path):
  """The digest identifies a build by its decoded records: a copy whose files were rewritten in
  another layout (other bytes, the same records, as two processes' builds are) has the same
  digest; the cache is reused while the files are as they were; records in another order give
  another digest."""
  from array_record.python import array_record_module
  builder = pipeline.load_builder(pipeline.BUILTIN, 'smoke', smoke_data_dir)
  original = provenance.dataset_digest(builder)
  assert original['name'] == pipeline.BUILTIN and original['config'] == 'smoke'
  assert len(original['sha256']) == 64 and len(original['files']) == len(builder.info.splits)
  assert original['digest_of'] == provenance.DIGEST_OF
  copy_dir = tmp_path / 'copy'
  shutil.copytree(smoke_data_dir, copy_dir)
  copied = pipeline.load_builder(pipeline.BUILTIN, 'smoke', str(copy_dir))
  folder = pathlib.Path(copied.data_dir)
  train_file = next(p for p in folder.iterdir() if 'train.array_record' in p.name)

  def rewrite(order, options):
    reader = array_record_module.ArrayRecordReader(str(train_file))
    records = [reader.read([i])[0] for i in range(reader.num_records())]
    reader.close()
    writer = array_record_module.ArrayRecordWriter(str(train_file), options)
    for i in order(len(records)):
      writer.write(records[i])
    writer.close()

  before = train_file.read_bytes()
  rewrite(lambda n: range(n), 'group_size:2')
  assert train_file.read_bytes() != before
  assert provenance.dataset_digest(copied)['sha256'] == original['sha256']
  cached = json.loads((folder / provenance.DIGEST_FILE).read_text())
  assert cached['sha256'] == original['sha256']
  assert provenance.dataset_digest(copied) == cached  # files unchanged: the cache
  rewrite(lambda n: [1, 0, *range(2, n)], 'group_size:1')
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
