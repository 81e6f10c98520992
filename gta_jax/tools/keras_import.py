"""Import one of the authors' released Keras .h5 models as a model bundle.

python -m gta_jax.keras_import IN.h5 OUT_DIR [--dct-stats DIR] [--head-names a,b] [--overwrite]

How release layers map onto ours: gta_jax/io/keras_import.py.
"""
import argparse
import pathlib
import shutil
import sys
import tempfile

from gta_jax import errors
from gta_jax.io import checkpoints
from gta_jax.io import keras_import
from gta_jax.models import networks
from gta_jax.models import spectral
from gta_jax.tools import cli


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m gta_jax.keras_import', description=__doc__.split('\n')[0])
  parser.add_argument('h5', help='release model, e.g. attribution_ganfp_progan.h5')
  parser.add_argument('out_dir', help='model bundle folder to write (new or empty)')
  parser.add_argument('--dct-stats', help='folder with mean.npy and std_dev.npy (DCT models)')
  parser.add_argument('--head-names', help='comma-separated head names (default: from file name)')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace the model bundle OUT_DIR holds (only once the new one is written)')
  return parser


def run(args) -> int:
  head_names = args.head_names.split(',') if args.head_names else None
  with cli.usage_errors():
    out_dir = pathlib.Path(args.out_dir)
    check_output_folder(out_dir, args.overwrite)
    spec, variables = keras_import.import_h5(args.h5, head_names)
    dct_stats = None
    if spec.input_kind == 'dct':
      if not args.dct_stats:
        raise errors.UsageError(f'{args.h5} is a DCT model: pass --dct-stats DIR (the release statistics, '
                     'e.g. dataset/statistics/ganfp/dctnorm).')
      dct_stats = spectral.load_dct_stats(args.dct_stats)
      if dct_stats[0].shape != (spec.image_size, spec.image_size):
        raise errors.UsageError(f'--dct-stats {args.dct_stats} is {dct_stats[0].shape}, but the model takes '
                     f'{spec.image_size}x{spec.image_size} inputs.')
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}.', dir=out_dir.parent))
    try:
      spec = checkpoints.save_model_bundle(staging, spec, variables, dct_stats)
      _replace_folder(staging, out_dir)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  print(f'wrote {args.out_dir}: {spec.input_kind} model, {spec.image_size} px, '
        f'heads {list(spec.head_names) or "none"}, '
        f'{networks.count_parameters(variables):,} parameters')
  return cli.OK


def main(argv=None) -> int:
  return cli.run_tool(run, build_parser().parse_args(argv))


def check_output_folder(out_dir: pathlib.Path, overwrite: bool) -> None:
  """OUT must be new, empty, or (with --overwrite) a model bundle: never someone's other files."""
  if out_dir.exists() and not out_dir.is_dir():
    raise errors.UserError(f'{out_dir} exists and is not a folder.')
  if out_dir.is_dir() and any(out_dir.iterdir()):
    if not overwrite:
      raise errors.UserError(f'{out_dir} is not empty; pass --overwrite to replace the model '
                             'bundle it holds, or name a new folder.')
    if not checkpoints.is_model_bundle(out_dir):
      raise errors.UserError(f'{out_dir} holds files but no model bundle (model.json); refusing '
                             'to replace it even with --overwrite.')
  errors.check_writable_folder(out_dir.parent, 'the folder of OUT_DIR')


def _replace_folder(new: pathlib.Path, target: pathlib.Path) -> None:
  """Moves `new` to `target`; an old target is moved aside first and removed only afterwards."""
  if target.exists():
    old = target.with_name(f'.{target.name}.replaced')
    shutil.rmtree(old, ignore_errors=True)
    target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)
  else:
    new.rename(target)


if __name__ == '__main__':
  sys.exit(main())
