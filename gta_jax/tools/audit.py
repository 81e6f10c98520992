"""A shortcut audit of a folder tree or a prepared dataset: per source, the images' containers
(format, size, JPEG quality and subsampling, bit depth, EXIF, ICC, file sizes), and whether any of
them tells real from fake, or one source from the others, better than chance. With --model, a
flip test: how many of the model's verdicts change when the images are re-encoded.

python -m gta_jax.audit FOLDER                       (real/<name>/, fake/<name>/, fake_testonly/<name>/)
python -m gta_jax.audit --dataset NAME[/CONFIG] [--split train] [--data-dir DIR]
    [--model RUN [--dct-stats DIR] [--per-source 200]] [--json OUT.json [--overwrite]]

Exit status: 0 done, whether or not something is flagged (the report and the JSON's "flagged"
say); 1 done, but some files could not be read (each named); 2 usage errors. See docs/audit.md.
"""
import argparse
import os
import pathlib
import sys

from gta_jax import errors
from gta_jax.data import audit
from gta_jax.data import images as images_lib
from gta_jax.io import composition
from gta_jax.io import outputs
from gta_jax.tools import cli

TOOL = 'audit'
PER_SOURCE = 200


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m gta_jax.audit', description=__doc__.split('\n')[0],
      epilog='Exit status 0 whether or not a shortcut is flagged; see docs/audit.md.')
  parser.add_argument('folder', nargs='?', metavar='FOLDER',
                      help='a folder tree in the folder dataset\'s layout: real/<name>/, '
                           'fake/<name>/, optional fake_testonly/<name>/ (docs/data.md)')
  parser.add_argument('--dataset', metavar='NAME[/CONFIG]',
                      help='a prepared dataset, as runs name it: synthetic_fingerprints[/smoke], '
                           'ganfp/2-1-1, faceshq_plus/default, folder/TAG (CONFIG default: '
                           '"default"); its stored encoded images are audited')
  parser.add_argument('--split', default='train', help='--dataset: the split (default train)')
  parser.add_argument('--data-dir', default=os.environ.get('TFDS_DATA_DIR', 'data/tfds'),
                      help='--dataset: where it is prepared (default $TFDS_DATA_DIR, else '
                           'data/tfds)')
  parser.add_argument('--model', action='append',
                      help='run the flip test with this model (release .h5, bundle or run '
                           'workdir; repeat to compose heads, as attribute)')
  parser.add_argument('--dct-stats', help='--model: DCT statistics folder of a DCT model')
  parser.add_argument('--per-source', type=int,
                      help=f'--model: images per source the flip test scores (default '
                           f'{PER_SOURCE})')
  parser.add_argument('--permutations', type=int, default=audit.PERMUTATIONS,
                      help='label shuffles of the permutation test (default %(default)s; the '
                           'smallest p-value is 1/(1 + this), so at least 99 for the 0.01 rule)')
  parser.add_argument('--json', help='write the whole report to this JSON file (a new file, or '
                      'one audit wrote)')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace a --json file that audit did not write')
  return parser


def check_args(args) -> None:
  if (args.folder is None) == (args.dataset is None):
    raise errors.UsageError('name what to audit: a FOLDER or --dataset NAME[/CONFIG] (one of '
                            'them).')
  if args.folder is not None and not os.path.isdir(args.folder):
    raise errors.UsageError(f'{images_lib.printable(args.folder)}: no such folder.')
  if args.model is None and (args.dct_stats or args.per_source is not None):
    raise errors.UsageError('--dct-stats and --per-source are for the flip test: add --model.')
  if args.per_source is None:
    args.per_source = PER_SOURCE
  if args.per_source < 1:
    raise errors.UsageError(f'--per-source {args.per_source}: must be at least 1.')
  if args.permutations < int(1 / audit.FLAG_P) - 1:
    raise errors.UsageError(f'--permutations {args.permutations}: at least '
                            f'{int(1 / audit.FLAG_P) - 1}, or nothing could reach p <= '
                            f'{audit.FLAG_P}.')
  if args.json:
    read = [composition.read_area(m) for m in args.model or ()] + [args.dct_stats, args.folder]
    outputs.check_file(args.json, tool=TOOL, overwrite=args.overwrite, read=read)


def run(args) -> int:
  with cli.usage_errors():
    check_args(args)
    if args.folder is not None:
      items = audit.folder_items(args.folder)
      what = images_lib.printable(args.folder)
      if not items:
        raise errors.UsageError(f'{what}: no image files in its source folders.')
    else:
      name, _, config = args.dataset.partition('/')
      items = audit.dataset_items(name, config or 'default', args.data_dir, args.split)
      what = f'{args.dataset} ({args.split} split, in {args.data_dir})'
    model = None
    if args.model:
      from gta_jax.scoring.inference import load_model
      model = load_model(args.model, args.dct_stats)
      model.use_open_set('auto')
  print(f'auditing {what}: {len(items)} images')
  items, failed = audit.read_features(items)
  if not items:
    raise errors.UsageError(f'{what}: no image could be read:\n  ' + '\n  '.join(failed[:20]))
  report = {'input': what, **audit.audit(items, args.permutations), 'unreadable': failed}
  if model is not None:
    report['flip_test'] = audit.flip_test(model, items, args.per_source)
    report['flip_test']['model'] = model.origin
  if args.json:
    cli.write_json(args.json, report, TOOL)
  print(audit.format_report(report))
  if failed:
    print(f'\n{len(failed)} file(s) could not be read:\n  ' + '\n  '.join(failed))
  return cli.SOME_FAILED if failed else cli.OK


def main(argv=None) -> int:
  return cli.run_tool(run, build_parser().parse_args(argv))


if __name__ == '__main__':
  sys.exit(main())
