"""Build a dataset's array_record files from the user's folders (no TensorFlow, no network).

python -m gta_jax.prepare --dataset ganfp --manual-dir /data/ganfp [--config 700-100-200] \
    [--skip-corrupt] [--data-dir data/tfds]

--config is 'default' (the paper's split counts) or 'TRAIN-VAL-TEST' images per source.

Any generator's images (the generic folder dataset: real/<name>/, fake/<name>/, optional
fake_testonly/<name>/ and architectures.json; docs/data.md):
python -m gta_jax.prepare --dataset folder --manual-dir ~/newgan --config newgan-60-20-20 \
    --image-size 64 [--jpeg-quality 75]
--config is a tag of your own, optionally with split counts ('newgan': each source gives the
smallest source's image count, split 70/10/20); runs name it in --config.data.config.

A prepared dataset's images into that layout (e.g. the built-in data, for a folder dataset):
python -m gta_jax.prepare --dataset synthetic_fingerprints --config variants \
    --export-folder DIR [--sources tconv,tconv.unseen_seed_1]
"""
import argparse
import contextlib
import os
import pathlib
import shutil
import sys

import tensorflow_datasets as tfds

from gta_jax import errors
from gta_jax.data import builders
from gta_jax.data import export
from gta_jax.data import images
from gta_jax.data import pipeline
from gta_jax.tools import cli


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m gta_jax.prepare', description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', required=True, choices=pipeline.DATASETS)
  parser.add_argument('--manual-dir', help='folder in the release layout (not for the built-in set)')
  parser.add_argument('--config', help='default: "default"; for --dataset folder a tag of your '
                      'own, e.g. newgan or newgan-60-20-20 (required)')
  parser.add_argument('--data-dir', default=os.environ.get('TFDS_DATA_DIR', 'data/tfds'),
                      help='default: $TFDS_DATA_DIR, else data/tfds')
  parser.add_argument('--skip-corrupt', action='store_true',
                      help='leave unreadable images out (listed in the metadata) instead of '
                      'stopping; each split then takes the next readable images')
  parser.add_argument('--rebuild', action='store_true',
                      help='replace a dataset prepared from this folder before (needed once the '
                      'folder or --skip-corrupt changed since)')
  parser.add_argument('--image-size', type=int,
                      help='--dataset folder (required): the training image side; other sizes are '
                      'centre-cropped to square and resized')
  parser.add_argument('--jpeg-quality', type=int,
                      help='--dataset folder: re-save every image as a JPEG of this quality '
                      '(default 0: store as read)')
  parser.add_argument('--export-folder', metavar='DIR',
                      help='instead of preparing: write the prepared dataset\'s images into DIR in '
                      'the folder dataset\'s layout (the built-in one is built first if needed)')
  parser.add_argument('--sources', help='with --export-folder: the fake sources to write, '
                      'comma-separated (default all; the real images always)')
  return parser


def _folder_module():
  return builders.module(f'{pipeline.FOLDER}.{pipeline.FOLDER}_dataset_builder')


def check_args(args) -> None:
  """Flags that do not fit the dataset or the action: refused before any work."""
  folder_only = [flag for flag, value in (('--image-size', args.image_size),
                                          ('--jpeg-quality', args.jpeg_quality))
                 if value is not None]
  if folder_only and (args.dataset != pipeline.FOLDER or args.export_folder):
    raise errors.UsageError(f'{", ".join(folder_only)}: only for preparing --dataset '
                            f'{pipeline.FOLDER}.')
  if args.sources is not None and not args.export_folder:
    raise errors.UsageError('--sources: only with --export-folder.')
  if args.export_folder:
    if args.manual_dir or args.skip_corrupt or args.rebuild:
      raise errors.UsageError('--export-folder writes a prepared dataset out; --manual-dir, '
                              '--skip-corrupt and --rebuild are for preparing one.')
    return
  if args.dataset == pipeline.BUILTIN and (args.skip_corrupt or args.rebuild):
    raise errors.UsageError('--skip-corrupt and --rebuild are for datasets prepared from your '
                            'folders; the built-in one is generated.')
  if args.dataset != pipeline.BUILTIN:
    if not args.manual_dir:
      raise errors.UsageError(f'--manual-dir is required for {args.dataset}')
    if not os.path.isdir(args.manual_dir):
      raise errors.UsageError(f'--manual-dir {images.printable(args.manual_dir)}: no such folder.')
    if not os.listdir(args.manual_dir):
      expected = ', '.join(f'{s.folder}/' for s in pipeline.builder_class(args.dataset).SOURCES)
      raise errors.UsageError(f'--manual-dir {images.printable(args.manual_dir)}: the folder is '
                              f'empty; expected {expected or "real/<name>/, fake/<name>/"} '
                              '(docs/data.md).')
  if args.dataset == pipeline.FOLDER:
    if args.config is None:
      raise errors.UsageError(f'--config: name this {pipeline.FOLDER} dataset with a tag of your '
                              'own, e.g. --config newgan (or newgan-60-20-20: split counts per '
                              'source); runs then load it with --config.data.config=newgan.')
    if args.image_size is None:
      raise errors.UsageError(f'--image-size is required for --dataset {pipeline.FOLDER}: the '
                              'side of the training images (e.g. 128); images of another size are '
                              'centre-cropped to square and resized.')
  errors.check_writable_folder(args.data_dir, '--data-dir')  # before any image is read


def run(args) -> int:
  check_args(args)
  if args.export_folder:
    return run_export(args)
  config = args.config or 'default'
  kwargs = {'config': config, 'data_dir': args.data_dir}
  if args.dataset != pipeline.BUILTIN:
    kwargs['skip_corrupt'] = args.skip_corrupt
  if args.dataset == pipeline.FOLDER:
    kwargs |= {'image_size': args.image_size, 'jpeg_quality': args.jpeg_quality or 0}
  try:
    with cli.usage_errors():
      builder = pipeline.builder_class(args.dataset)(**kwargs)
      replaced = None
      if args.dataset == pipeline.FOLDER:
        # The layout's and the split counts' errors before anything is written.
        sources, _, _ = _folder_module().plan(args.manual_dir, builder.builder_config)
        existing = _folder_module().load_prepared(args.config, args.data_dir)
        if _already_prepared(existing, builder, args, sources):
          return cli.OK
        replaced = existing and existing.data_dir
      elif args.dataset != pipeline.BUILTIN and builder.is_prepared():
        if _up_to_date(builder, args, builder.SOURCES, f'{args.dataset}/{config}'):
          return _report(builder, args, reused=True)
        replaced = builder.data_dir
      with _replacing(replaced):
        if replaced:  # a builder made while the old build was there holds its info
          builder = pipeline.builder_class(args.dataset)(**kwargs)
        builder.download_and_prepare(
            file_format='array_record',
            download_config=tfds.download.DownloadConfig(manual_dir=args.manual_dir))
  except errors.UsageError as e:
    if isinstance(e.__cause__, images.UnreadableImages):  # inputs that failed, each named
      print(f'error: {images.printable(e)}', file=sys.stderr)
      return cli.SOME_FAILED
    raise
  return _report(builder, args)


def _report(builder, args, reused: bool = False) -> int:
  splits = ', '.join(f'{k} {v.num_examples}' for k, v in builder.info.splits.items())
  print(f'{args.dataset}/{builder.builder_config.name} in {args.data_dir} '
        + ('is prepared already (same folder, files and options; nothing to do)' if reused else
           'prepared') + f': {splits}')
  if args.dataset == pipeline.FOLDER:
    metadata = builder.info.metadata
    sizes = metadata['split_sizes']
    print(f'  {metadata["image_size"]} px, '
          + (f'JPEG quality {metadata["jpeg_quality"]}' if metadata['jpeg_quality'] else
             'stored as read')
          + f'; per source {sizes["train"]}/{sizes["validation"]}/{sizes["test"]}; sources '
          + ', '.join(f'{name} {i}' for name, i in metadata['source_ids'].items()))
    print(f'  train on it with --config.data.name={pipeline.FOLDER} '
          f'--config.data.config={builder.builder_config.name} (docs/data.md)')
  skipped = builder.info.metadata.get('skipped_files') or []
  if skipped:
    print(f'{len(skipped)} unreadable file(s) left out:\n  '
          + '\n  '.join(map(images.printable, skipped)))
  return cli.OK


def _up_to_date(existing, args, sources, name: str) -> bool:
  """A dataset prepared from this folder before: True when the folder's files and the skip
  setting are what it was built from (its recorded fingerprint; where only the times differ, the
  files' bytes decide); else, with --rebuild, False (build anew: run() keeps the old build aside
  until the new one is complete), and without, a stale dataset is refused, saying what changed.
  One prepared before fingerprints were recorded is kept, with a warning."""
  recorded = existing.info.metadata.get('source_fingerprint')
  if args.rebuild:
    return False
  same, current = _folder_module().folder_dataset.same_source(recorded, args.manual_dir, sources,
                                                              args.skip_corrupt)
  if same:
    return True
  if recorded is None:
    print(f'warning: {name} in {existing.data_dir} was prepared before prepare recorded what it '
          'was built from, so whether the folder changed since is unknown; --rebuild to be sure.')
    return True
  changed = []
  if recorded.get('skip_corrupt') != current['skip_corrupt']:
    changed.append(f'--skip-corrupt was {"on" if recorded.get("skip_corrupt") else "off"}')
  if recorded.get('files') != current['files']:
    changed.append(f'{recorded.get("files")} image files then, {current["files"]} now')
  elif not changed:
    changed.append('image files changed (size or contents)')
  raise errors.UsageError(
      f'{existing.data_dir}: {name} was prepared from {images.printable(args.manual_dir)} as it '
      f'was then, and it has changed since ({"; ".join(changed)}). Add --rebuild to replace it '
      '(runs trained on the old build keep their recorded dataset digest), or prepare the '
      'changed folder under another name.')


@contextlib.contextmanager
def _replacing(build_dir):
  """--rebuild: the old build moved aside while the new one is written, deleted once it is
  complete, and put back if the build fails (an unreadable image, Ctrl-C): a failed rebuild
  leaves the dataset runs use as it was."""
  build_dir = pathlib.Path(build_dir) if build_dir else None
  if build_dir is None or not build_dir.is_dir():
    yield
    return
  aside = build_dir.with_name(f'.{build_dir.name}.replaced-{os.getpid()}')
  os.replace(build_dir, aside)
  try:
    yield
  except BaseException:
    shutil.rmtree(build_dir, ignore_errors=True)
    os.replace(aside, build_dir)
    print(f'--rebuild failed: {build_dir} is left as it was.', file=sys.stderr)
    raise
  shutil.rmtree(aside)
  print(f'--rebuild: replaced {build_dir}')


def _already_prepared(existing, builder, args, sources) -> bool:
  """A folder dataset of this tag prepared in data_dir already (`existing`): the same options
  (image size, JPEG quality, folder) and files -> nothing to do (True); other options are
  refused, naming them; a changed folder is refused unless --rebuild (then False: built anew)."""
  if existing is None:
    return False
  recorded = existing.info.metadata
  wanted = {'image_size': builder.builder_config.image_size,
            'jpeg_quality': builder.builder_config.jpeg_quality,
            'manual_dir': images.printable(os.path.abspath(args.manual_dir))}
  differ = [f'{key} {recorded.get(key)!r} (now {value!r})' for key, value in wanted.items()
            if recorded.get(key) != value]
  if differ and not args.rebuild:
    raise errors.UsageError(
        f'{existing.data_dir}: folder dataset {args.config!r} is prepared already, with '
        f'{"; ".join(differ)}. Choose another tag, or add --rebuild to replace it.')
  if not _up_to_date(existing, args, sources, f'{pipeline.FOLDER}/{args.config}'):
    return False
  _report(existing, args, reused=True)
  return True


def run_export(args) -> int:
  out_dir = export.check_target(args.export_folder)
  sources = None
  if args.sources is not None:
    sources = [s.strip() for s in args.sources.split(',') if s.strip()]
    if not sources:
      raise errors.UsageError('--sources: name at least one source, e.g. --sources tconv.')
  with cli.usage_errors():
    builder = pipeline.load_builder(args.dataset, args.config or 'default', args.data_dir)
  name = f'{args.dataset}/{builder.builder_config.name}'
  print(f'exporting {name} to {out_dir}:')
  written, per_source = export.export_folder(builder, out_dir, sources)
  trainable = [n for folder, n in written.items() if not folder.startswith('fake_testonly/')]
  counts = ('-' + '-'.join(map(str, per_source))
            if per_source and min(trainable) >= sum(per_source) else '')
  print(f'wrote {sum(written.values())} images in {len(written)} source folders. Prepare them with\n'
        f'  python -m gta_jax.prepare --dataset {pipeline.FOLDER} --manual-dir {out_dir} '
        f'--config TAG{counts} --image-size {export.image_size(builder)} --data-dir {args.data_dir}')
  return cli.OK


def main(argv=None) -> int:
  return cli.run_tool(run, build_parser().parse_args(argv))


if __name__ == '__main__':
  sys.exit(main())
