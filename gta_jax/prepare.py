"""Build a dataset's array_record files from the user's folders (no TensorFlow, no network).

python -m gta_jax.prepare --dataset ganfp --manual-dir /data/ganfp [--config 700-100-200] \
    [--skip-corrupt] [--data-dir data/tfds]

--config is 'default' (the paper's split counts) or 'TRAIN-VAL-TEST' images per source.
"""
import argparse
import os
import sys

import tensorflow_datasets as tfds

from gta_jax import images
from gta_jax import input_pipeline


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m gta_jax.prepare', description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', required=True, choices=input_pipeline.DATASETS)
  parser.add_argument('--manual-dir', help='folder in the release layout (not for the built-in set)')
  parser.add_argument('--config', default='default')
  parser.add_argument('--data-dir', default=os.environ.get('TFDS_DATA_DIR', 'data/tfds'),
                      help='default: $TFDS_DATA_DIR, else data/tfds')
  parser.add_argument('--skip-corrupt', action='store_true',
                      help='leave unreadable images out (listed in the metadata) instead of stopping')
  args = parser.parse_args(argv)
  kwargs = {'config': args.config, 'data_dir': args.data_dir}
  if args.dataset != input_pipeline.BUILTIN:
    if not args.manual_dir:
      parser.error(f'--manual-dir is required for {args.dataset}')
    kwargs['skip_corrupt'] = args.skip_corrupt
  try:
    builder = input_pipeline.builder_class(args.dataset)(**kwargs)
    builder.download_and_prepare(
        file_format='array_record',
        download_config=tfds.download.DownloadConfig(manual_dir=args.manual_dir))
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {images.printable(e)}', file=sys.stderr)
    return 1
  splits = ', '.join(f'{k} {v.num_examples}' for k, v in builder.info.splits.items())
  print(f'prepared {args.dataset}/{builder.builder_config.name} in {args.data_dir}: {splits}')
  skipped = builder.info.metadata.get('skipped_files') or []
  if skipped:
    print(f'{len(skipped)} unreadable file(s) left out:\n  '
          + '\n  '.join(map(images.printable, skipped)))
  return 0


if __name__ == '__main__':
  sys.exit(main())
