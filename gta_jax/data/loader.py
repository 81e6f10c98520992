"""The one entry point to data: open a dataset once from `config.data`, then draw batches from it.

`open_dataset` resolves everything a run needs to know about its data (the prepared TFDS builder,
image size, source ids, DCT statistics); `Dataset.batches` yields host batches (numpy, see
gta_jax/input_pipeline.py) with an augmentation mode and a seed, each process its own rows of
every global batch; `to_device` is the one place where host batches become (sharded) device
arrays.
"""
import dataclasses
import pathlib
from typing import Any, Iterator

import numpy as np

from gta_jax import errors
from gta_jax.data import augment
from gta_jax.data import device_path
from gta_jax.data import pipeline
from gta_jax.io import distributed
from gta_jax.io.writers import log
from gta_jax.models import spectral

TRAINING_SPLITS = ('train', 'validation')  # the splits that hold the run's training distribution


@dataclasses.dataclass
class Dataset:
  """A prepared dataset and what a run needs to know about it (host side)."""
  name: str
  builder: Any
  image_size: int                 # side of the (square) training images
  source_ids: dict[str, int]      # source name -> id (real is 0)
  dct_stats: tuple[np.ndarray, np.ndarray]  # (mean, std) [H, W] float32; (0, 1) scalars for pixel input
  augment_options: augment.Options = augment.Options()  # for every mode and split
  # Source ids left out of the training and validation splits (config.data.exclude_sources).
  excluded_ids: tuple[int, ...] = ()
  workers: int = 0                # grain worker processes decoding and augmenting (0: in-process)
  # Shuffle each content group (a real crop and its reconstructions) as one block (training
  # batches then hold crops beside their fakes): only datasets whose metadata says
  # `content_matched` have such groups (the built-in data from version 2).
  group_by_content: bool = False
  # The training-only widenings of config.data (real_softening, photometric_jitter), applied to
  # the training and validation splits only.
  widening: augment.Widening = augment.Widening.NONE
  # Where training batches are augmented ('host' or 'device', config.data.augment_on resolved)
  # and, on the device, how much of the training split may be held in device memory.
  augment_on: str = 'host'
  device_cache_bytes: float = 8 * 2**30
  _sources: dict = dataclasses.field(default_factory=dict, repr=False)
  _device_split: Any = dataclasses.field(default=None, repr=False)
  _groups: dict = dataclasses.field(default_factory=dict, repr=False)

  def has_split(self, split: str) -> bool:
    return split in self.builder.info.splits

  def source(self, split: str):
    """The split's random-access data source (opened once); training and validation without the
    excluded sources."""
    if split not in self._sources:
      source = pipeline.data_source(self.builder, split)
      if self.excluded_ids and split in ('train', 'validation'):
        keep = [i for i in range(len(source))
                if int(source[i]['source_id']) not in self.excluded_ids]
        log(f'{split}: {len(source) - len(keep)} images of excluded sources left out')
        source = _Subset(source, keep)
      self._sources[split] = source
    return self._sources[split]

  def content_groups(self, split: str) -> np.ndarray | None:
    """One group id per record of `split` (the crop it shows), or None without content groups."""
    if not self.group_by_content:
      return None
    if split not in self._groups:
      source = self.source(split)
      self._groups[split] = np.array([int(source[i]['index']) for i in range(len(source))])
    return self._groups[split]

  def image_size_of(self, split: str) -> int:
    """Side of the images of `split` (an external split may differ from the training size)."""
    return int(self.source(split)[0]['image'].shape[0])

  def size(self, split: str) -> int:
    return len(self.source(split))

  def steps_per_epoch(self, batch_size: int) -> int:
    """Full training batches per epoch (the last partial batch is dropped, as Keras did)."""
    return pipeline.num_batches(self.source('train'), batch_size, drop_remainder=True)

  def batches(self, split: str, batch_size: int, *, mode: str = 'clean', seed: int, epoch: int = 0,
              shuffle: bool = False, drop_remainder: bool = False,
              start_batch: int = 0, share: bool = True,
              as_trained: bool = True) -> Iterator[dict]:
    """Host batches of one pass over `split` (see pipeline.batches). Training passes
    shuffle=True, drop_remainder=True; evaluation scores every image (padded + masked).

    as_trained: the training and validation splits widened as config.data says (the
    distribution the run learns); False: as stored (statistics of the clean images).

    share: this process's rows of each global batch of `batch_size` (what `to_device` shards);
    False: every row (host-side work one process does alone, e.g. DCT statistics)."""
    rows = distributed.process_rows(batch_size) if share else None
    as_trained_split = as_trained and split in TRAINING_SPLITS
    return pipeline.batches(self.source(split), batch_size, seed=seed, epoch=epoch, mode=mode,
                                  shuffle=shuffle, drop_remainder=drop_remainder,
                                  start_batch=start_batch, options=self.augment_options,
                                  rows=rows, workers=self.workers,
                                  groups=self.content_groups(split) if shuffle else None,
                                  widening=self.widening if as_trained_split
                                  else augment.Widening.NONE)

  def training_batches(self, batch_size: int, *, mode: str, seed: int, epoch: int,
                       label_view, start_batch: int = 0) -> Iterator[tuple[dict, Any]]:
    """One training epoch from batch `start_batch` on -> (device batch, device labels
    `label_view(host batch)`), shuffled (grouped by content where the data has groups), full
    batches only, augmented in `mode` on the host or on the device (`augment_on`): the same order
    either way, each image's draws in the same distributions."""
    if self.augment_on == 'device':
      if self._device_split is None:
        self._device_split = device_path.load_split(self.source('train'),
                                                    self.device_cache_bytes)
      return device_path.batches(self._device_split, batch_size, seed=seed, epoch=epoch,
                                 mode=mode, label_view=label_view,
                                 groups=self.content_groups('train'), start_batch=start_batch,
                                 options=self.augment_options, widening=self.widening)
    return prefetch_to_device(
        self.batches('train', batch_size, mode=mode, seed=seed, epoch=epoch, shuffle=True,
                     drop_remainder=True, start_batch=start_batch), label_view)

  def source_id(self, name: str, key: str = 'config.sources') -> int:
    if name not in self.source_ids:
      raise errors.ConfigError(f'{key}: unknown source {name!r} for {self.name}; choose from '
                     f'{", ".join(s for s in self.source_ids if s != "real")}.')
    return self.source_ids[name]


class _Subset:
  """Random access to the records of `source` at `indices`."""

  def __init__(self, source, indices):
    self._source, self._indices = source, list(indices)

  def __len__(self):
    return len(self._indices)

  def __getitem__(self, index):
    return self._source[self._indices[index]]


def open_dataset(data_config, input_kind: str) -> Dataset:
  """config.data (name, config, data_dir, augmentation options) + the model's input kind -> Dataset.

  DCT statistics are those of the clean training split, computed once and cached beside it.
  """
  builder = pipeline.load_builder(data_config.name, data_config.config, data_config.data_dir)
  source_ids = {str(k): int(v) for k, v in builder.info.metadata['source_ids'].items()}
  dataset = Dataset(data_config.name, builder, 0, source_ids,
                    (np.zeros((), np.float32), np.ones((), np.float32)),
                    augment.Options(bool(data_config.release_blur_sigma),
                                    bool(data_config.noise_variance)),
                    workers=int(data_config.get('workers', 0)),
                    group_by_content=bool(data_config.get('group_by_content', True)
                                          and builder.info.metadata.get('content_matched', False)),
                    widening=augment.Widening.from_config(data_config),
                    augment_on=device_path.resolve(data_config.get('augment_on', 'auto')),
                    device_cache_bytes=float(data_config.get('device_cache_gb', 8.0)) * 2**30)
  excluded = tuple(data_config.get('exclude_sources', ()))
  dataset.excluded_ids = tuple(dataset.source_id(name, 'config.data.exclude_sources')
                                for name in excluded)
  if 0 in dataset.excluded_ids:
    raise errors.ConfigError('config.data.exclude_sources: the real class cannot be left out.')
  dataset.image_size = dataset.image_size_of('train')
  if input_kind == 'dct':
    mean, std = dct_statistics(dataset)
    dataset.dct_stats = (np.asarray(mean, np.float32), np.asarray(std, np.float32))
  return dataset


def dct_statistics(dataset: Dataset, batch_size: int = 256):
  """Per-coefficient mean/std of the clean training split (Welford), cached beside the dataset."""
  cache = pathlib.Path(dataset.builder.data_dir) / 'dct_stats'
  if dataset.excluded_ids:  # statistics of the training images the run sees
    cache = cache.with_name('dct_stats_without_' + '_'.join(map(str, sorted(dataset.excluded_ids))))
  if not (cache / 'mean.npy').is_file() and distributed.is_main_process():
    log(f'computing DCT statistics over the training split -> {cache}')
    stats = spectral.DctStats()
    for batch in dataset.batches('train', batch_size, seed=0, share=False, as_trained=False):
      stats.update(spectral.log_dct_numpy(batch['image'][batch['mask']]))
    stats.save(cache)
  distributed.wait_for_all('dct_stats')  # the other processes read what process 0 wrote
  return spectral.load_dct_stats(cache)


def to_device(batch: dict, batch_axis: int = 0) -> dict:
  """This process's rows of a host batch -> global device arrays split over the mesh's `data`
  axis: the one place data crosses to the accelerators. Label views with the batch last
  ([K, B] head targets) pass batch_axis=-1."""
  return distributed.shard(batch, batch_axis)


def prefetch_to_device(batches: Iterator[dict], label_view, size: int = 2):
  """Host batches -> (device batch, device labels `label_view(batch)` [.., B]), `size` batches
  ahead: their copies to the devices overlap the step running there (JAX dispatches
  asynchronously), so a GPU does not wait for its next batch."""
  return device_path.ahead(((to_device(batch), to_device(label_view(batch), batch_axis=-1))
                            for batch in batches), size)
