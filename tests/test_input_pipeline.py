import numpy as np
import pytest

from gta_jax import errors, input_pipeline


@pytest.fixture(scope='module')
def builder(smoke_data_dir):
  return input_pipeline.load_builder(input_pipeline.BUILTIN, 'smoke', smoke_data_dir)


def test_builtin_dataset_splits_labels_and_sources(builder):
  splits = builder.info.splits
  assert {s: splits[s].num_examples for s in splits} == {
      'train': 5 * 48, 'validation': 5 * 16, 'test': 5 * 24, 'test_cross_seed': 4 * 16,
      'test_external': 16}
  train = input_pipeline.data_source(builder, 'train')
  records = [train[i] for i in range(len(train))]
  sources = {r['source'].decode() if isinstance(r['source'], bytes) else r['source'] for r in records}
  assert sources == {'real', 'tconv', 'nearest', 'bilinear', 'pixelshuffle'}
  for r in records:
    assert r['image'].shape == (32, 32, 3) and r['image'].dtype == np.uint8
    assert r['label'] == (0 if r['source_id'] == 0 else 1)
  external = input_pipeline.data_source(builder, 'test_external')[0]
  assert external['image'].shape == (64, 64, 3)  # DCGAN faces at native size
  assert external['label'] == 1


def test_fakes_of_different_generators_differ_but_share_content(builder):
  """Same held-apart input per index for every generator: only the upsampling differs."""
  test = input_pipeline.data_source(builder, 'test')
  by_key = {}
  for i in range(len(test)):
    r = test[i]
    by_key[(int(r['source_id']), int(r['index']))] = r['image'].astype(float)
  a, b = by_key[(1, 0)], by_key[(3, 0)]
  assert 0 < np.abs(a - b).mean() < 40


def test_two_runs_give_identical_batches_and_resume_mid_epoch(builder):
  source = input_pipeline.data_source(builder, 'train')
  kwargs = dict(seed=3, epoch=1, mode='multi')
  first = list(input_pipeline.batches(source, 16, **kwargs))
  second = list(input_pipeline.batches(source, 16, **kwargs))
  assert len(first) == 240 // 16
  for a, b in zip(first, second):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  tail = list(input_pipeline.batches(source, 16, start_batch=5, **kwargs))
  for a, b in zip(first[5:], tail):
    np.testing.assert_array_equal(a['image'], b['image'])
  other_epoch = next(input_pipeline.batches(source, 16, seed=3, epoch=2, mode='multi'))
  assert not np.array_equal(other_epoch['source_id'], first[0]['source_id'])


def test_evaluation_batches_cover_every_image_once(builder):
  source = input_pipeline.data_source(builder, 'validation')
  batches = list(input_pipeline.batches(source, 32, seed=0, shuffle=False, drop_remainder=False))
  assert len(batches) == 3 and all(b['image'].shape[0] == 32 for b in batches)
  assert sum(int(b['mask'].sum()) for b in batches) == 80
  assert not batches[-1]['mask'][16:].any()


def test_head_targets_one_vs_rest():
  targets = input_pipeline.head_targets(np.array([0, 1, 2, 1]), (1, 2))
  np.testing.assert_array_equal(targets, [[0, 1, 0, 1], [0, 0, 1, 0]])


def test_unknown_dataset_and_split_errors_say_what_to_do(builder, tmp_path):
  with pytest.raises(input_pipeline.DatasetNotPrepared, match='synthetic_fingerprints'):
    input_pipeline.load_builder('imagenet', 'default', str(tmp_path))
  with pytest.raises(errors.ConfigError, match='test_external'):
    input_pipeline.data_source(builder, 'nope')


def test_worker_processes_give_the_same_batches(builder):
  """config.data.workers > 0: grain worker processes (the pipeline pickled into each) decode and
  augment; the batches and their order are those of the training process itself."""
  source = input_pipeline.data_source(builder, 'train')
  kwargs = dict(seed=3, epoch=1, mode='multi', start_batch=2, rows=(4, 12))
  in_process = list(input_pipeline.batches(source, 16, **kwargs))
  with_workers = list(input_pipeline.batches(source, 16, workers=2, **kwargs))
  assert len(in_process) == len(with_workers) == 240 // 16 - 2
  for a, b in zip(in_process, with_workers):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
