"""Compose a model from one primary and heads trained on it in separate runs: enrol a generator's
head, remove one, list what a model holds. No retraining, no data (gta_jax/io/composition.py).

gta-model list MODEL
gta-model add MODEL HEADS... [--out NEW] [--rename OLD=NEW ...]
gta-model remove MODEL HEAD... [--out NEW]

MODEL is a model bundle, a run workdir (its model/) or a release .h5; HEADS are runs or bundles
whose heads were trained on MODEL's primary (config.init.primary); every head of each is enrolled.
Without --out, MODEL itself is updated, which only a model composed by gta-model may be: a run's
own model is never rewritten. Start one with --out:
  gta-model add runs/phase2_synthetic runs/phase3_synthetic runs/heads_newgan --out models/faces
Exit status: 0 done, 2 on usage errors (a head of another primary, a duplicate name, ...).
"""
import argparse
import json
import sys

from gta_jax import errors
from gta_jax.io import composition
from gta_jax.io import outputs
from gta_jax.scoring import openset
from gta_jax.scoring import verdicts
from gta_jax.tools import cli


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='gta-model', description=__doc__.split('\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog='\n'.join(__doc__.split('\n')[2:]))
  commands = parser.add_subparsers(dest='command', required=True)
  listing = commands.add_parser('list', help='the primary and every head: threshold, calibrations, '
                                'provenance')
  listing.add_argument('model')
  listing.add_argument('--json', action='store_true', help='print the listing as JSON')
  add = commands.add_parser('add', help='enrol the heads of runs or bundles trained on the '
                            "model's primary")
  add.add_argument('model')
  add.add_argument('heads', nargs='+', metavar='HEADS', help='heads runs or model bundles')
  add.add_argument('--rename', action='append', default=[], metavar='OLD=NEW',
                   help='enrol the incoming head OLD as NEW (repeatable)')
  add.add_argument('--out', help='write the composed model here (default: update MODEL, which '
                   'must be a composed model)')
  remove = commands.add_parser('remove', help='remove heads by name')
  remove.add_argument('model')
  remove.add_argument('names', nargs='+', metavar='HEAD')
  remove.add_argument('--out', help='write the result here (default: update MODEL)')
  return parser


def _renames(pairs) -> dict:
  renames = {}
  for pair in pairs:
    old, sep, new = pair.partition('=')
    if not sep or not old or not new:
      raise errors.UsageError(f'--rename {pair!r}: use OLD=NEW, e.g. --rename progan=progan_v2.')
    if old in renames:
      raise errors.UsageError(f'--rename names {old!r} twice.')
    renames[old] = new
  return renames


def describe(model: composition.Model) -> dict:
  """What `list` shows, as data."""
  spec = model.spec
  thresholds = verdicts.Thresholds.from_json(spec.thresholds)
  fitted = spec.open_set or {}
  groups = openset.knn_records(spec)
  heads = []
  for k, name in enumerate(spec.head_names):
    record = dict(spec.head_provenance[k]) if spec.head_provenance else {}
    calibrations = [m for m in composition.PER_HEAD_CALIBRATIONS if m in fitted]
    calibrations += ['knn'] if any(name in g['heads'] for g in groups) else []
    heads.append({'name': name, 'threshold': float(thresholds.for_heads(len(spec.head_names))[k]),
                  'open_set': calibrations, **record})
  return {'model': model.origin, 'input_kind': spec.input_kind, 'image_size': spec.image_size,
          'primary_digest': spec.primary_digest, 'primary_source': spec.source,
          'fake_threshold': thresholds.fake, 'composed': spec.composed,
          'head_frequency_inputs': list(spec.head_frequency_inputs), 'heads': heads,
          'knn_calibrations': [{'heads': g['heads'], 'images': g.get('images'),
                                'threshold': g['threshold']} for g in groups]}


def format_listing(listing: dict) -> str:
  lines = [f'{listing["model"]}: {listing["input_kind"]} model, {listing["image_size"]} px, '
           f'primary {listing["primary_digest"][:12]} (from {listing["primary_source"]}), '
           f'fake at p >= {listing["fake_threshold"]:g}',
           f'{len(listing["heads"])} head(s):']
  for head in listing['heads']:
    where = head.get('run') or head.get('bundle') or '?'
    dataset = head.get('dataset') or {}
    data = f', data {dataset.get("name")}/{dataset.get("config")} {dataset.get("sha256", "")[:12]}' \
        if dataset else ''
    renamed = f' (named {head["name_in_run"]} there)' if 'name_in_run' in head else ''
    lines.append(f'  {head["name"]:<16} p >= {head["threshold"]:<6g} open set: '
                 f'{",".join(head["open_set"]) or "none":<14} weights {head.get("digest", "?")[:12]}'
                 f'  from {where}{renamed}{data}')
  for group in listing['knn_calibrations']:
    lines.append(f'kNN calibration over {", ".join(group["heads"])}: {group["images"]} training '
                 f'images, threshold {group["threshold"]:.3f}')
  return '\n'.join(lines)


def run(args) -> int:
  with cli.usage_errors():
    if args.command == 'list':
      listing = describe(composition.read(args.model))
      print(json.dumps(listing, indent=2) if args.json else format_listing(listing))
      return cli.OK
    if args.out:  # a new model goes beside what it is made of, never into a run or bundle read
      read = [composition.read_area(p) for p in [args.model] + getattr(args, 'heads', [])]
      outputs.check_not_inside(args.out, [a for a in read if not outputs.within(a, args.out)],
                               '--out')
    target = composition.check_target(args.out or args.model)  # before any work
    base = composition.read(args.model)
    if args.command == 'add':
      renames = _renames(args.rename)
      model = composition.compose(base, [composition.read(p) for p in args.heads], renames)
      notes = []
    else:
      model, notes = composition.remove(base, args.names)
    spec = composition.save(model, target)
  for note in notes:
    print(f'note: {note}')
  print(f'wrote {target}: {len(spec.head_names)} head(s) on primary {spec.primary_digest[:12]}: '
        + (', '.join(spec.head_names) or 'none'))
  return cli.OK


def main(argv=None) -> int:
  return cli.run_tool(run, build_parser().parse_args(argv))


if __name__ == '__main__':
  sys.exit(main())
