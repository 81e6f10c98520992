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
from gta_jax.io import composition
from gta_jax.io import keras_import
from gta_jax.io import outputs
from gta_jax.models import networks
from gta_jax.models import spectral
from gta_jax.tools import cli

TOOL = 'keras_import'


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m gta_jax.keras_import', description=__doc__.split('\n')[0])
  parser.add_argument('h5', help='release model, e.g. attribution_ganfp_progan.h5')
  parser.add_argument('out_dir', help='model bundle folder to write (new or empty)')
  parser.add_argument('--dct-stats', help='folder with mean.npy and std_dev.npy (DCT models)')
  parser.add_argument('--head-names', help='comma-separated head names (default: from file name)')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace the model bundle an earlier import wrote to OUT_DIR (only '
                           'once the new one is written); never a run\'s or composed model, nor '
                           'a folder holding other files')
  return parser


def run(args) -> int:
  head_names = args.head_names.split(',') if args.head_names else None
  with cli.usage_errors():
    out_dir = pathlib.Path(args.out_dir)
    check_output_folder(out_dir, args.overwrite, [pathlib.Path(args.h5), args.dct_stats])
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
      outputs.replace_folder(staging, out_dir)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  print(f'wrote {args.out_dir}: {spec.input_kind} model, {spec.image_size} px, '
        f'heads {list(spec.head_names) or "none"}, '
        f'{networks.count_parameters(variables):,} parameters')
  return cli.OK


def main(argv=None) -> int:
  return cli.run_tool(run, build_parser().parse_args(argv))


def check_output_folder(out_dir: pathlib.Path, overwrite: bool, read=()) -> None:
  """OUT must be new, empty, or (with --overwrite) a model bundle keras_import wrote holding
  nothing else (composition.check_target, gta-model's check): never a run's bundle, another
  tool's bundle or a folder of other files, whatever the flag says."""
  outputs.check_not_inside(out_dir, read, 'OUT_DIR')
  composition.check_target(out_dir, tool=TOOL)
  if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
    raise errors.UsageError(f'{out_dir} is not empty: it holds a model bundle imported earlier. '
                            'Pass --overwrite to replace it, or name a new folder.')


if __name__ == '__main__':
  sys.exit(main())
