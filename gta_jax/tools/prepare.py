"""Build a dataset's array_record files from the user's folders (no TensorFlow, no network).

python -m gta_jax.prepare --dataset ganfp --manual-dir /data/ganfp [--config 700-100-200] \
    [--skip-corrupt] [--data-dir data/tfds]

--config is 'default' (the paper's split counts) or 'TRAIN-VAL-TEST' images per source.
"""
import argparse
import os
import sys

import tensorflow_datasets as tfds

from gta_jax import errors
from gta_jax.data import images
from gta_jax.data import pipeline
from gta_jax.tools import cli


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m gta_jax.prepare', description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', required=True, choices=pipeline.DATASETS)
  parser.add_argument('--manual-dir', help='folder in the release layout (not for the built-in set)')
  parser.add_argument('--config', default='default')
  parser.add_argument('--data-dir', default=os.environ.get('TFDS_DATA_DIR', 'data/tfds'),
                      help='default: $TFDS_DATA_DIR, else data/tfds')
  parser.add_argument('--skip-corrupt', action='store_true',
                      help='leave unreadable images out (listed in the metadata) instead of stopping')
  return parser


def run(args) -> int:
  kwargs = {'config': args.config, 'data_dir': args.data_dir}
  if args.dataset != pipeline.BUILTIN:
    if not args.manual_dir:
      raise errors.UsageError(f'--manual-dir is required for {args.dataset}')
    kwargs['skip_corrupt'] = args.skip_corrupt
  try:
    with cli.usage_errors():
      builder = pipeline.builder_class(args.dataset)(**kwargs)
      builder.download_and_prepare(
          file_format='array_record',
          download_config=tfds.download.DownloadConfig(manual_dir=args.manual_dir))
  except errors.UsageError as e:
    if isinstance(e.__cause__, images.UnreadableImages):  # inputs that failed, each named
      print(f'error: {images.printable(e)}', file=sys.stderr)
      return cli.SOME_FAILED
    raise
  splits = ', '.join(f'{k} {v.num_examples}' for k, v in builder.info.splits.items())
  print(f'prepared {args.dataset}/{builder.builder_config.name} in {args.data_dir}: {splits}')
  skipped = builder.info.metadata.get('skipped_files') or []
  if skipped:
    print(f'{len(skipped)} unreadable file(s) left out:\n  '
          + '\n  '.join(map(images.printable, skipped)))
  return cli.OK


def main(argv=None) -> int:
  return cli.run_tool(run, build_parser().parse_args(argv))


if __name__ == '__main__':
  sys.exit(main())
