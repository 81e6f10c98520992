"""TFDS array_record data sources + grain -> numpy batches, with on-the-fly augmentation.

Batches are dicts of numpy arrays: image [B, H, W, 3] uint8, label [B] int32 (real 0 / fake 1),
source_id [B] int32, mask [B] bool (False on padding of a final partial evaluation batch),
perturbations [B] uint8 (which of augment.KINDS the image's draw applied, one bit each).
An example's augmentation draw depends only on (seed, epoch, position in the epoch), and the
epoch's order only on (seed, epoch), so a run resumed mid-epoch sees exactly the same batches.
"""
import functools

from absl import flags
import grain
import numpy as np

from gta_jax import errors
from gta_jax.data import augment
from gta_jax.data import builders

BUILTIN = 'synthetic_fingerprints'
# Fixed seeds for the augmented test sets, so every model is scored on the same images.
TEST_SET_SEEDS = {'clean': 0, 'multi': 1001, 'blur': 1002, 'crop': 1003, 'jpeg': 1004, 'noise': 1005,
                  'one': 1006}
# Validation is augmented as the training data (the release validated phases II/IV on its
# augmented validation folder), with one fixed draw so every epoch sees the same images.
VALIDATION_SEED = 1000
# Offset of the seed of the training batches that BatchNorm statistics are recalibrated on.
BN_RECALIBRATION_SEED = 7000


class DatasetNotPrepared(errors.UserError, RuntimeError):
  """A dataset that has not been built (or does not exist); the message says how to build it."""


# `folder`: the generic folder dataset (datasets/folder/), any generators' images from the user's
# folders; each prepared one is a config named by its tag, loaded from its recorded metadata.
FOLDER = 'folder'
DATASETS = (BUILTIN, 'ganfp', 'faceshq_plus', FOLDER)


def builder_class(name: str):
  """The TFDS Builder class of one of our datasets (datasets/<name>/<name>_dataset_builder.py)."""
  if name not in DATASETS:
    raise DatasetNotPrepared(f'config.data.name={name!r}: unknown dataset; choose one of '
                             f'{", ".join(DATASETS)}.')
  return builders.module(f'{name}.{name}_dataset_builder').Builder


def variants_config(name: str, config: str) -> str:
  """The dataset config holding `config`'s images plus the variant splits (itself if none)."""
  return getattr(builder_class(name), 'VARIANT_CONFIGS', {}).get(config, config)


def load_builder(name: str, config: str, data_dir: str, prepare_builtin: bool = True):
  """The dataset's TFDS builder, prepared. The built-in dataset is generated on first use."""
  if name == FOLDER:
    return _prepared_folder(config, data_dir)
  try:
    builder = builder_class(name)(config=config, data_dir=data_dir)
  except ValueError as e:  # TFDS: no such builder config
    raise DatasetNotPrepared(f'config.data.config={config!r} is not a configuration of {name}: '
                             f'{str(e).splitlines()[0]}') from None
  if not builder.is_prepared():
    if name != BUILTIN or not prepare_builtin:
      raise DatasetNotPrepared(
          f'Dataset {name}/{config} is not prepared in {data_dir}. Build it from your folders '
          f'(the release layout) with\n  python -m gta_jax.prepare --dataset {name} '
          f'--manual-dir /path/to/{name} --config {config} --data-dir {data_dir}\nor run this '
          f'phase on the built-in data instead: --config.data.name={BUILTIN} '
          '--config.sources="(\'tconv\',)" (sources: tconv, nearest, bilinear, pixelshuffle).')
    builder.download_and_prepare(file_format='array_record')
  return builder


def _prepared_folder(config: str, data_dir: str):
  """A prepared folder dataset, read-only: its options and sources come from its metadata."""
  module = builders.module(f'{FOLDER}.{FOLDER}_dataset_builder')
  prepared = module.prepared_configs(data_dir)
  there = (f'Prepared in {data_dir}: {", ".join(prepared)}.' if prepared
           else f'No folder dataset is prepared in {data_dir}.')
  try:
    builder = module.load_prepared(config, data_dir)
  except ValueError as e:
    raise DatasetNotPrepared(f'config.data.config={config!r}: {e} {there}') from None
  if builder is None:
    raise DatasetNotPrepared(
        f'Folder dataset {config!r} is not prepared. {there} Build it from your '
        f'folder (real/<name>/, fake/<name>/, docs/data.md) with\n  python -m gta_jax.prepare '
        f'--dataset {FOLDER} --manual-dir /path/to/folder --config {config} --image-size N '
        f'--data-dir {data_dir}')
  return builder


def data_source(builder, split: str):
  try:
    return builder.as_data_source(split=split)
  except (KeyError, ValueError) as e:
    raise errors.ConfigError(f'{builder.name}/{builder.builder_config.name} has no split {split!r}; '
                   f'it has {", ".join(builder.info.splits)}.') from e


def _decode(record, seed: int, epoch: int, position: int, mode: str,
            options: augment.Options = augment.Options(),
            widening: augment.Widening = augment.Widening.NONE):
  # A content group is the crop a record shows (the built-in data's `index`), else the position.
  group = int(record['index']) if 'index' in record else position
  image = widening.apply(record['image'], int(record['label']), seed=seed, epoch=epoch,
                         position=position, group=group)
  applied = 0
  if mode != 'clean':
    image, applied = augment.augment_recorded(image, mode,
                                              augment.example_rng(seed, epoch, position), options)
  return {'image': np.ascontiguousarray(image, np.uint8), 'label': np.int32(record['label']),
          'source_id': np.int32(record['source_id']), 'mask': np.bool_(True),
          'perturbations': np.uint8(applied)}


def _decode_at(position, record, *, seed: int, epoch: int, mode: str, options: augment.Options,
               widening: augment.Widening = augment.Widening.NONE):
  return _decode(record, seed, epoch, position, mode, options, widening)


class _BatchRows:
  """Random access to rows [start, stop) of every global batch of one epoch of `examples`.

  A position past the end (the final partial batch of an evaluation pass) is a masked copy of the
  last example, so shapes stay static and every image is scored once. A plain class, not a lambda:
  worker processes receive the pipeline pickled.
  """

  def __init__(self, examples, batch_size: int, rows: tuple[int, int], num_batches: int):
    self._examples, self._batch_size, self._rows = examples, batch_size, rows
    self._length = num_batches * (rows[1] - rows[0])

  def __len__(self):
    return self._length

  def __getitem__(self, index):
    start, stop = self._rows
    batch, row = divmod(index, stop - start)
    position = batch * self._batch_size + start + row
    if position < len(self._examples):
      return self._examples[position]
    return dict(self._examples[len(self._examples) - 1], mask=np.bool_(False))


class _Reordered:
  """Random access to `source` in the order `order` (picklable, for worker processes)."""

  def __init__(self, source, order):
    self._source, self._order = source, np.asarray(order)

  def __len__(self):
    return len(self._order)

  def __getitem__(self, index):
    return self._source[int(self._order[index])]


def grouped_order(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """A shuffle that keeps the records of each group together: groups in random order, the records
  of a group in random order. With content-matched data (a real crop and its reconstructions share
  a group) most batches then hold each crop beside its fakes, so the gradient sees what differs
  between them rather than between contents."""
  groups = np.asarray(groups)
  rank = rng.permutation(len(np.unique(groups)))[np.unique(groups, return_inverse=True)[1]]
  return np.lexsort((rng.random(len(groups)), rank))


def _shuffle_seed(seed: int, epoch: int) -> int:
  """grain's shuffle seed for one epoch of a plain shuffle."""
  return int(np.random.default_rng([seed, epoch]).integers(2**31))


def _grouping_rng(seed: int, epoch: int) -> np.random.Generator:
  """The generator of one epoch's content-grouped order."""
  return np.random.default_rng([seed, epoch, 1])


def epoch_order(size: int, seed: int, epoch: int, groups: np.ndarray | None) -> np.ndarray:
  """The record order of one shuffled epoch, as `batches` reads it: for paths that index the
  records themselves (gta_jax/data/device_path.py)."""
  if groups is not None:
    return grouped_order(groups, _grouping_rng(seed, epoch))
  shuffled = grain.MapDataset.range(size).shuffle(seed=_shuffle_seed(seed, epoch))
  return np.fromiter((shuffled[i] for i in range(size)), np.int64, size)


def _stack(examples):
  return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


def num_batches(source, batch_size: int, drop_remainder: bool) -> int:
  return len(source) // batch_size if drop_remainder else -(-len(source) // batch_size)


def batches(source, batch_size: int, *, seed: int, epoch: int = 0, mode: str = 'clean',
            shuffle: bool = True, drop_remainder: bool = True, start_batch: int = 0,
            options: augment.Options = augment.Options(), num_threads: int | None = None,
            rows: tuple[int, int] | None = None, workers: int = 0,
            groups: np.ndarray | None = None,
            widening: augment.Widening = augment.Widening.NONE):
  """Iterates numpy batches of one epoch of `source`, from batch `start_batch` on.

  rows: the rows [start, stop) of each global batch of `batch_size` that this process reads
  (gta_jax/io/distributed.py; default all): the global order and each image's augmentation draw are
  those of a single process. workers > 0: decoding and augmentation run in that many grain worker
  processes (order unchanged). num_threads: grain read threads per process; default 2 in the
  training process, 1 in each worker (measured: workers then scale at 0.97 of linear, at 2 each
  at 0.78 for the same total; benchmarks/input_pipeline.py). groups: one group id per record;
  a shuffled pass keeps each group's records together (grouped_order). widening: the
  training-only widenings applied before `mode`'s perturbations (the data layer passes
  config.data's for the training and validation splits, none for the others).
  """
  if num_threads is None:
    num_threads = 1 if workers else 2
  rows = rows or (0, batch_size)
  examples = grain.MapDataset.source(source)
  if shuffle and groups is not None:
    order = grouped_order(groups, _grouping_rng(seed, epoch))
    examples = grain.MapDataset.source(_Reordered(source, order))
  elif shuffle:
    examples = examples.shuffle(seed=_shuffle_seed(seed, epoch))
  examples = examples.map_with_index(
      functools.partial(_decode_at, seed=seed, epoch=epoch, mode=mode, options=options,
                        widening=widening))
  dataset = grain.MapDataset.source(
      _BatchRows(examples, batch_size, rows, num_batches(source, batch_size, drop_remainder)))
  dataset = dataset.batch(rows[1] - rows[0], batch_fn=_stack)
  if start_batch:
    dataset = dataset[start_batch:]
  dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                      prefetch_buffer_size=4))
  if workers:
    if not flags.FLAGS.is_parsed():  # grain's workers read its absl flags: outside an absl app
      flags.FLAGS.mark_as_parsed()   # (tests, notebooks) they keep their defaults
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return iter(dataset)


def head_targets(source_id: np.ndarray, target_ids) -> np.ndarray:
  """One-vs-rest view: [B] source ids -> [K, B] float32, 1 where the image comes from head k's source."""
  return (np.asarray(source_id)[None, :] == np.asarray(target_ids)[:, None]).astype(np.float32)
