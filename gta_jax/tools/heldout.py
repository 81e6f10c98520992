"""Held-out check: how a trained detector treats real photos (and fakes) it has never seen.

python -m gta_jax.heldout --model RUN [RUN ...] --real PHOTOS [--fake FAKES] [--json OUT.json]
    [--overwrite]

Training data says little about photos from elsewhere: a detector can separate its training
classes by a cue (sharpness, content, scale) that real photos from another camera do not share.
This command prints the false-positive rate on a folder of real photos, and with --fake the
recall and ROC-AUC against a folder of fakes. Never train on the photos you check with. Each rate
comes with a 95% bootstrap interval over images: crops of one photo are called fake together, so
a folder of a dozen photos pins a rate down far less than its hundreds of crops suggest. Several
models (one per training seed) are scored on the same crops, and each figure is then also given
as mean +- std over them: what one seed's detector does is an anecdote.

Images of the model's input size are scored as they are. Larger ones (camera photos) give
--crops-per-image crops of the input size, each from the photo LANCZOS down-scaled so that its
short side is a random 1.5-4x the input size, as the built-in real class is made (random crops of
down-scaled photos); the draw is fixed by --seed, so reruns score the same crops. Exit status: 0
when every file was read, 1 when some could not be (listed), 2 on usage errors.
"""
import argparse
import pathlib
import sys

import numpy as np
from PIL import Image

from gta_jax import errors
from gta_jax.data import images as images_lib
from gta_jax.io import composition
from gta_jax.io import outputs
from gta_jax.io import progress
from gta_jax.scoring import inference
from gta_jax.scoring import metrics
from gta_jax.tools import cli

TOOL = 'heldout'
SHORT_SIDE_RANGE = (1.5, 4.0)  # down-scaled photo's short side, in multiples of the input size


def photo_crops(rgb: np.ndarray, size: int, count: int, rng: np.random.Generator) -> np.ndarray:
  """[H, W, 3] uint8 -> [n, size, size, 3]: the image itself at the input size, else `count`
  crops of it down-scaled (LANCZOS) to a random short side; a photo too small to down-scale is
  cropped as it is."""
  height, width = rgb.shape[:2]
  if (height, width) == (size, size):
    return rgb[None]
  if min(height, width) < size:
    raise images_lib.ImageReadError(f'{width}x{height} is smaller than the model\'s {size}x{size} '
                                     'input')
  crops = []
  for _ in range(count):
    short = min(min(height, width), int(size * rng.uniform(*SHORT_SIDE_RANGE)))
    scale = short / min(height, width)
    region = rgb
    if scale < 1:
      new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
      region = np.asarray(Image.fromarray(rgb).resize(new_size, Image.Resampling.LANCZOS))
    top = rng.integers(0, region.shape[0] - size + 1)
    left = rng.integers(0, region.shape[1] - size + 1)
    crops.append(region[top:top + size, left:left + size])
  return np.stack(crops)


def score_folder(models: list[inference.LoadedModel], folder, crops_per_image: int, seed: int,
                 batch_size: int = 64) -> tuple[list[list[dict]], list[dict]]:
  """Each photo read and cropped once, its crops scored by every model (of one input size), so
  all score the very same crops -> (per model, one record per file: path, crops, p_fake per crop;
  error records for unreadable files)."""
  paths = images_lib.list_images([folder])
  size = models[0].spec.image_size
  rng = np.random.default_rng(seed)
  records, failed = [[] for _ in models], []
  for path in progress.progress(paths, desc=f'heldout {folder}', unit='images'):
    try:
      rgb, _ = images_lib.read_rgb(path)
      crops = photo_crops(rgb, size, crops_per_image, rng)
      inputs_by_model = [np.stack([inference.prepare_input(model, crop)[0] for crop in crops])
                         for model in models]
    except images_lib.ImageReadError as e:
      failed.append({'path': images_lib.printable(path),
                     'error': images_lib.printable(e if str(path) in str(e) else f'{path}: {e}')})
      continue
    per_model = []
    for model, inputs in zip(models, inputs_by_model):
      scores = []
      for start in range(0, len(inputs), batch_size):
        p_fake, _, _, _ = inference.score_batch(model.variables, inputs[start:start + batch_size],
                                                input_kind=model.spec.input_kind,
                                                num_heads=len(model.spec.head_names),
                                                with_saliency=False)
        scores.extend(np.asarray(p_fake, np.float64).tolist())
      per_model.append(scores)
    # A NaN score is neither real nor fake (>= threshold is False: it counted as real). The file
    # is left out for every model, so that all still score the same crops, and named.
    broken = [i for i, scores in enumerate(per_model) if not np.all(np.isfinite(scores))]
    if broken:
      failed.append({'path': images_lib.printable(path), 'error': images_lib.printable(
          f'{path}: ' + '; '.join(f'model {i + 1} gave {np.sum(~np.isfinite(per_model[i]))} '
                                  f'non-finite score(s) of {len(per_model[i])}' for i in broken)
          + ' (NaN or infinity: its weights or statistics are broken)')})
      continue
    for scores, model_records in zip(per_model, records):
      model_records.append({'path': images_lib.printable(path), 'crops': len(scores),
                            'p_fake': scores})
  return records, failed


INTERVAL_LEVEL = 0.95


def image_interval(called: list[int], crops: list[int]) -> dict | None:
  """The 95% bootstrap interval, over images, of the share of crops called fake (`called` and
  `crops` per image; metrics.grouped_rate_interval): a few photos make most false positives, so
  the spread over photos says what another folder of photos may give. None with fewer than two
  images. It is the spread among these images: where every image gives the same rate (none
  called fake) it is a point, not a bound for photos unlike them."""
  interval = metrics.grouped_rate_interval(called, crops, level=INTERVAL_LEVEL)
  return None if interval is None else {'level': INTERVAL_LEVEL, 'low': interval[0],
                                        'high': interval[1]}


def _called_per_image(records: list[dict], threshold: float) -> list[int]:
  return [int(np.sum(np.array(r['p_fake']) >= threshold)) for r in records]


def summarize(real: list[dict], fake: list[dict] | None, threshold: float) -> dict:
  """False-positive rate on the real crops, recall on the fakes (each with its interval over
  images), ROC-AUC of the two."""
  real_scores = np.array([s for r in real for s in r['p_fake']])
  called = _called_per_image(real, threshold)
  summary = {'threshold': threshold, 'real': {
      'images': len(real), 'crops': int(real_scores.size),
      'false_positive_rate': float(np.mean(real_scores >= threshold)) if real_scores.size else None,
      'false_positive_interval': image_interval(called, [len(r['p_fake']) for r in real]),
      'per_image_called_fake': {r['path']: n for r, n in zip(real, called)}}}
  if fake is not None:
    fake_scores = np.array([s for r in fake for s in r['p_fake']])
    summary['fake'] = {'images': len(fake), 'crops': int(fake_scores.size),
                       'recall': float(np.mean(fake_scores >= threshold))
                       if fake_scores.size else None,
                       'recall_interval': image_interval(_called_per_image(fake, threshold),
                                                         [len(r['p_fake']) for r in fake])}
    labels = np.concatenate([np.zeros(real_scores.size), np.ones(fake_scores.size)])
    summary['roc_auc'] = metrics.roc_auc(labels, np.concatenate([real_scores, fake_scores]))
  return summary


def _interval_text(interval: dict | None) -> str:
  if interval is None:
    return ''
  return (f' ({interval["level"]:.0%} interval over images {interval["low"]:.3f}-'
          f'{interval["high"]:.3f})')


def format_summary(summary: dict) -> str:
  real = summary['real']
  lines = [f'threshold {summary["threshold"]:.2f} (the model\'s)',
           f'real: {real["crops"]} crops of {real["images"]} images, false-positive rate '
           + (f'{real["false_positive_rate"]:.3f}' if real['crops'] else 'n/a')
           + _interval_text(real['false_positive_interval'])]
  worst = sorted(real['per_image_called_fake'].items(), key=lambda kv: -kv[1])
  worst = [f'{pathlib.Path(p).name} {n}' for p, n in worst if n][:5]
  if worst:
    lines.append('  most crops called fake: ' + ', '.join(worst))
  if 'fake' in summary:
    fake = summary['fake']
    lines.append(f'fake: {fake["crops"]} crops of {fake["images"]} images, recall '
                 + (f'{fake["recall"]:.3f}' if fake['crops'] else 'n/a')
                 + _interval_text(fake['recall_interval']))
    auc = summary['roc_auc']
    lines.append('ROC-AUC real vs fake: ' + (f'{auc:.3f}' if auc is not None else 'n/a'))
  return '\n'.join(lines)


OVER_MODELS = (('false-positive rate', ('real', 'false_positive_rate')),
               ('recall', ('fake', 'recall')), ('ROC-AUC', ('roc_auc',)))


def over_models(summaries: list[dict]) -> dict:
  """Several models' summaries (training seeds of one config) -> each headline figure's mean,
  sample std and per-model values, over the models that have it."""
  out = {}
  for name, keys in OVER_MODELS:
    values = []
    for summary in summaries:
      value = summary
      for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
      if value is not None:
        values.append(value)
    if values:
      out[name] = metrics.mean_and_spread(values) | {'values': values}
  return out


def format_over_models(aggregate: dict) -> str:
  return '\n'.join(f'over {figure["n"]} models: {name} {figure["mean"]:.3f} +- {figure["std"]:.3f} '
                   f'({min(figure["values"]):.3f}-{max(figure["values"]):.3f})'
                   for name, figure in aggregate.items())


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m gta_jax.heldout', description=__doc__.split(
      '\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', required=True, nargs='+',
                      help='run workdir, model bundle or release .h5; several (e.g. one per '
                      'training seed) are scored on the same crops and summarised as mean +- std')
  parser.add_argument('--real', required=True, help='folder of real photos never trained on')
  parser.add_argument('--fake', help='folder of generated images (optional)')
  parser.add_argument('--dct-stats', help='DCT statistics folder, for DCT release models')
  parser.add_argument('--crops-per-image', type=int, default=8,
                      help='crops from each image larger than the model input (default 8)')
  parser.add_argument('--seed', type=int, default=0, help='the crops\' draw (default 0)')
  parser.add_argument('--json', help='write the summary and per-crop scores here (a new file, or '
                      'one heldout wrote)')
  parser.add_argument('--overwrite', action='store_true',
                      help='replace a --json file that heldout did not write (never a model\'s '
                           'or run\'s file)')
  return parser


def run(args) -> int:
  with cli.usage_errors():
    if args.crops_per_image < 1:
      raise errors.UsageError(f'--crops-per-image {args.crops_per_image}: must be >= 1.')
    for flag, folder in (('--real', args.real), ('--fake', args.fake)):
      if folder is not None and not pathlib.Path(folder).is_dir():
        raise errors.UsageError(f'{flag} {folder}: no such folder.')
      if folder is not None and not images_lib.list_images([folder]):
        raise errors.UsageError(f'{flag} {folder}: no image files in it.')
    if args.json:  # never a model's or run's file; another's JSON only with --overwrite
      read = [composition.read_area(path) for path in args.model] + [args.dct_stats]
      outputs.check_file(args.json, tool=TOOL, overwrite=args.overwrite, read=read)
    models = [inference.load_model(path, args.dct_stats) for path in args.model]
    sizes = {path: model.spec.image_size for path, model in zip(args.model, models)}
    if len(set(sizes.values())) > 1:
      raise errors.UsageError('--model: these models take different input sizes ('
                                 + ', '.join(f'{p}: {n} px' for p, n in sizes.items())
                                 + '), so they cannot score the same crops; compare runs of '
                                 'one config.')
  real, failed = score_folder(models, args.real, args.crops_per_image, args.seed)
  fake = [None] * len(models)
  if args.fake:
    fake, more = score_folder(models, args.fake, args.crops_per_image, args.seed + 1)
    failed += more
  records = [{'model': images_lib.printable(path), 'real': real_records, 'fake': fake_records,
              'summary': summarize(real_records, fake_records, model.thresholds.fake)}
             for path, model, real_records, fake_records in zip(args.model, models, real, fake)]
  if len(records) == 1:
    record = records[0]
    report = {'summary': record['summary'], 'real': record['real'], 'fake': record['fake'],
              'failed': failed}
    print(format_summary(record['summary']))
  else:
    report = {'over_models': over_models([r['summary'] for r in records]), 'models': records,
              'failed': failed}
    for record in records:
      print(f'model {record["model"]}')
      print('  ' + format_summary(record['summary']).replace('\n', '\n  '))
    print(format_over_models(report['over_models']))
  if args.json:
    cli.write_json(args.json, report, TOOL)
  for record in failed:
    print(f'not scored: {record["error"]}')
  return cli.SOME_FAILED if failed else cli.OK


def main(argv=None) -> int:
  return cli.run_tool(run, build_parser().parse_args(argv))


if __name__ == '__main__':
  sys.exit(main())
