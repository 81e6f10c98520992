"""Score images with a detector (+ attribution heads): verdicts, probabilities, saliency overlays.

python -m gta_jax.attribute --model PATH [--dct-stats DIR] [--json OUT.json] [--cam-dir DIR] \
    [--overwrite] IMAGE_OR_DIR...

PATH is a release .h5 file (imported on the fly), a model bundle folder (`keras_import` output, a
run's exported model or a `gta-model` composition), or a run workdir holding one in `model/`.
--model may be repeated: the heads of every model, all trained on the first one's primary, are
scored together (composed in memory, with the checks `gta-model add` makes). Exit status: 0 when every image
was scored, 1 when some could not be, 2 on usage errors.

Outputs are checked before the model loads (gta_jax/io/outputs.py): --json and --cam-dir never
inside a model read or an input, --cam-dir never an input's folder, and only attribute's own
earlier output is replaced unless --overwrite (docs/attribution.md, "Where it writes").
"""
import argparse
import pathlib
import sys

from gta_jax import errors
from gta_jax.data import images as images_lib
from gta_jax.io import composition
from gta_jax.io import outputs
from gta_jax.scoring import saliency
from gta_jax.scoring.inference import attribute
from gta_jax.scoring.inference import format_table
from gta_jax.scoring.inference import load_model
from gta_jax.scoring.inference import MemoryLimits
from gta_jax.scoring.inference import MIN_SIDE
from gta_jax.scoring.inference import overlay_names
from gta_jax.tools import cli

TOOL = 'attribute'


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m gta_jax.attribute', description='Detect and attribute GAN-generated images.',
      epilog='Put "--" before the images if a file name starts with "-".')
  parser.add_argument('--model', required=True, action='append',
                      help='release .h5, model bundle, or run workdir. Repeat it to score with '
                           'the heads of several runs trained on one primary (the first model\'s): '
                           'they are composed as `gta-model add` would, without writing anything')
  parser.add_argument('--dct-stats', help='DCT statistics folder (mean.npy, std_dev.npy)')
  parser.add_argument('--json', help='write one record per input file to this JSON file (a new '
                      'file, or one attribute wrote)')
  parser.add_argument('--cam-dir', help='write CAM / Grad-CAM overlays here, one per input at its '
                      'path under the inputs\' common folder (a new or empty folder, or one '
                      'attribute wrote to; never an input folder)')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace a --json file that attribute did not write, and write '
                           'overlays into a --cam-dir holding other files (an input, or a model '
                           'read, is never replaced)')
  parser.add_argument('--cam-scale', choices=saliency.CAM_SCALES, default='minmax',
                      help='minmax: stretch each map to [0, 1] (default); release: values as they '
                           'are, as the authors drew them')
  parser.add_argument('--max-pixels', type=int, default=MemoryLimits.image_pixels,
                      help='largest image scored, in pixels (default %(default)s: about 2 GB of '
                           'memory; see docs/attribution.md)')
  parser.add_argument('--open-set', choices=('auto', 'tpr95', 'doc', 'knn', 'off'),
                      default='auto',
                      help='tpr95, doc: heads claim at thresholds calibrated on validation '
                           'data and an unclaimed fake is "unknown"; knn: heads claim at 0.5 and '
                           'a fake no head claims or far from every known training image (kNN '
                           'distance, its threshold kept by 99%% of known validation fakes) is '
                           '"unknown"; auto (default): knn when the model has it, else tpr95, '
                           'else off')
  parser.add_argument('--uncalibrated', action='store_true',
                      help='report the scores as the network gives them, not calibrated by the '
                           'temperatures the bundle holds (verdicts are the same either way)')
  parser.add_argument('inputs', nargs='+', metavar='IMAGE_OR_DIR')
  return parser


CAM_MANIFEST = 'overlays.json'  # in --cam-dir: {overlay: input} of every overlay attribute wrote


def check_outputs(args) -> outputs.Folder | None:
  """--json and --cam-dir, before any model loads (gta_jax/io/outputs.py): neither inside a model
  read, --json never an input, --cam-dir never an input folder, one holding one or inside one
  (its overlays would be scored next time), nor a folder of files attribute did not write."""
  read = [composition.read_area(m) for m in args.model] + [args.dct_stats]
  inputs = [pathlib.Path(p) for p in args.inputs]
  folders = [p for p in inputs if p.is_dir()]
  files = [p for p in inputs if not p.is_dir()]
  if args.json:
    outputs.check_file(args.json, tool=TOOL, overwrite=args.overwrite, read=read + files)
  if args.cam_dir:
    if args.json and outputs.within(args.json, pathlib.Path(args.cam_dir) / CAM_MANIFEST):
      raise errors.UsageError(f'--json {args.json} is the list of overlays --cam-dir keeps; name '
                              'another file.')
    return outputs.check_folder(args.cam_dir, tool=TOOL, flag='--cam-dir', manifest=CAM_MANIFEST,
                                overwrite=args.overwrite, read=read + folders,
                                holding=folders + [p.parent for p in files], ignore=[args.json])
  return None


def run(args) -> int:
  with cli.usage_errors():
    if args.max_pixels < MIN_SIDE * MIN_SIDE:
      raise errors.UsageError(f'--max-pixels {args.max_pixels}: must be at least {MIN_SIDE * MIN_SIDE}.')
    cams = check_outputs(args)
    paths = images_lib.list_images(args.inputs)
    if not paths:
      raise errors.UsageError(
          f'no image files found in {images_lib.printable(" ".join(args.inputs))}')
    if args.json and any(cli.same_file(p, args.json) for p in paths):
      raise errors.UsageError(f'--json {args.json} is also one of the inputs.')
    model = load_model(args.model, args.dct_stats)
    model.use_open_set(args.open_set)
    model.use_calibration(not args.uncalibrated)
  if cams is not None:  # listed before any is written: a rerun knows them as attribute's own
    cams.plan(dict(zip(overlay_names(paths), map(images_lib.printable, paths))))
  if model.open_set:
    print(f'open set ({model.open_set}, fitted on {model.spec.open_set.get("split")}): heads claim '
          f'at ' + ', '.join(f'{n} {t:.3f}' for n, t in zip(
              model.spec.head_names, model.thresholds.for_heads(len(model.spec.head_names))))
          + '; a fake no head claims is "unknown"'
          + ('' if model.knn is None else
             ', and so is one whose ' + model.knn.describe()
             + ('' if len(model.knn.groups) == 1 else ' (each run\'s calibration; known when '
                'any accepts it)')))
  calibrated = model.describe_calibration()
  if calibrated:
    print(calibrated)
  records = attribute(model, paths, args.cam_dir, args.cam_scale,
                      MemoryLimits(image_pixels=args.max_pixels))
  if args.json:  # before printing: the records are the result, the table a view of them
    cli.write_json(args.json, records, TOOL)
  print(format_table(records, model.spec.head_names))
  failed = sum(r['error'] is not None for r in records)
  print(f'\n{len(records) - failed} scored, {failed} failed')
  return cli.SOME_FAILED if failed else cli.OK


def main(argv=None) -> int:
  return cli.run_tool(run, build_parser().parse_args(argv))


if __name__ == '__main__':
  sys.exit(main())
