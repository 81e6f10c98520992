"""Attribution throughput and memory as the number of enrolled heads grows (the paper's scalability
claim: a head costs a share of a primary forward, and nothing else).

python benchmarks/enrolled_heads.py --json out.json [--heads 1,2,4,8,16,32 --batch 64 --image-size 128]

On a randomly initialised pixel model (time does not depend on the weights' values), side by side
in one process, interleaved rounds:
  per_head   `inference.score_batch` as attribute runs it: the primary as one program, then each
             head as the same one-head program (what makes enrolment leave other heads' outputs
             bit for bit unchanged);
  stacked    the K heads as one program with the primary (networks.predict, the form training
             and evaluation use), for comparison.
The FLOP-proportional estimate is t(1) * (F_primary + K F_head) / (F_primary + F_head), F from
XLA's cost analysis of the two programs; `vs_flop_estimate` is the measured time over it (the
target: at most 1.2 for every K). Memory: the process's peak resident set after scoring with K
heads (K ascending, so each figure bounds everything before it), and the weights' bytes.
"""
import argparse
import functools
import resource

import jax
import numpy as np

import common  # benchmarks/common.py
from gta_jax.models import networks
from gta_jax.scoring import inference


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--heads', default='1,2,4,8,16,32')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--image-size', type=int, default=128)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--paths', default='per_head,stacked',
                      help='per_head alone measures the peak memory of what attribute runs')
  parser.add_argument('--json')
  args = parser.parse_args()
  counts = [int(k) for k in args.heads.split(',')]
  size, key = args.image_size, jax.random.key(0)
  primary = networks.init_variables(networks.Primary(True), key, (1, size, size, 3))
  most = networks.init_variables(networks.StackedHeads(max(counts), True), jax.random.fold_in(key, 1),
                                 (1, -(-size // 4), -(-size // 4), 16))
  x = np.random.default_rng(0).uniform(-1, 1, (args.batch, size, size, 3)).astype(np.float32)
  models = {k: {'primary': primary, 'heads': jax.tree.map(lambda a, k=k: a[:k], most)}
            for k in counts}

  def per_head(k):
    return inference.score_batch(models[k], x, input_kind='pixel', num_heads=k,
                                 with_saliency=False)[:2]

  @functools.partial(jax.jit, static_argnames='k')
  def stacked(variables, k):
    out = networks.predict(variables, x, input_kind='pixel', num_heads=k)
    return jax.nn.sigmoid(out.primary.logit), jax.nn.sigmoid(out.heads.logit)

  paths = {'per_head': per_head, 'stacked': lambda k: stacked(models[k], k)}
  paths = {name: paths[name] for name in args.paths.split(',')}
  memory = {}
  for k in counts:  # compile every program first; the peak memory after each K, ascending
    for fn in paths.values():
      jax.block_until_ready(fn(k))
    memory[k] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
  rounds = {(path, k): [] for path in paths for k in counts}
  for _ in range(args.rounds):  # interleaved, so a load change hits every variant alike
    for k in counts:
      for name, fn in paths.items():
        rounds[(name, k)].append(common.time_fn(fn, k, repeats=3, min_seconds=1.0))
  seconds = {key: float(np.median(values)) for key, values in rounds.items()}
  seconds |= {('stacked', k): float('nan') for k in counts if 'stacked' not in paths}
  mid = np.zeros((args.batch, -(-size // 4), -(-size // 4), 16), np.float32)
  flops_primary = common.flops_of(
      jax.jit(functools.partial(inference._score_primary, input_kind='pixel')), primary, x)
  flops_head = common.flops_of(
      jax.jit(functools.partial(inference._score_head, input_kind='pixel')),
      jax.tree.map(lambda a: a[:1], most), mid, x)
  anchor_flops = flops_primary + counts[0] * flops_head
  table = {}
  for k in counts:  # the ratio first: at the anchor it is 1.0 exactly, so the estimate is t(1)
    estimate = seconds[('per_head', counts[0])] * ((flops_primary + k * flops_head) / anchor_flops)
    table[k] = {
        'per_head_images_per_s': args.batch / seconds[('per_head', k)],
        'stacked_images_per_s': args.batch / seconds[('stacked', k)],
        'per_head_ms_per_image': 1e3 * seconds[('per_head', k)] / args.batch,
        'flop_estimate_ms_per_image': 1e3 * estimate / args.batch,
        'vs_flop_estimate': seconds[('per_head', k)] / estimate,
        'per_head_vs_stacked_time': seconds[('per_head', k)] / seconds[('stacked', k)],
        'peak_rss_mib': memory[k],
        'head_weights_kib': sum(np.asarray(a).nbytes for a in jax.tree.leaves(
            models[k]['heads'])) / 1024}
    print(f'K={k:3d}  per-head {table[k]["per_head_images_per_s"]:7.1f} img/s  stacked '
          f'{table[k]["stacked_images_per_s"]:7.1f} img/s  vs FLOP estimate '
          f'{table[k]["vs_flop_estimate"]:.3f}  peak RSS {memory[k]:.0f} MiB')
  common.write_json(args.json, {
      'batch': args.batch, 'image_size': size, 'rounds': args.rounds,
      'mflop_per_image': {'primary': flops_primary / args.batch / 1e6,
                          'head': flops_head / args.batch / 1e6},
      'by_heads': table, 'max_vs_flop_estimate': max(t['vs_flop_estimate'] for t in table.values()),
      'machine': common.machine()})


if __name__ == '__main__':
  main()
