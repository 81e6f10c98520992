"""XLA CPU switches (XLA_FLAGS) against the default, on the primary's train and inference steps.

python benchmarks/xla_switches.py [--batches 64,256] [--models primary,primary_dct]
    [--forms cpu,lax] [--configs default,ynn_no_reduce,...] [--rounds 5] [--json OUT]

XLA reads XLA_FLAGS once, when the backend starts, so each configuration is a worker process of
its own (this script with --worker) that builds and compiles every case (model x form x batch:
the jitted steps of benchmarks/train_step.py) and then waits. The parent alternates: in each
round, for each case and step, every worker in turn (order rotated per round) times a few calls
while the others sleep, so all configurations see the same machine load. Reported: per
configuration the median images/s over all rounds, and its ratio to the default taken round by
round (median, min, max over the rounds: the spread). Each worker also returns the first step's
loss, gradient norm and inference outputs on the same batch, compared with the default's (a
switch may change summation order).

The switches (every flag name and value is checked by XLA: an unknown one aborts the worker):
- --xla_cpu_experimental_ynn_fusion_type: which ops go to YNNPACK. In jaxlib 0.10.2 the default
  list is individual_convolution, individual_dot, reduce (the flag's help text says "empty", the
  compiled debug options and the optimised HLO's __ynn_fusion ops say otherwise); '-x' removes
  x from it, an empty value turns YNNPACK off.
- --xla_cpu_prefer_vector_width (default 256; 512 uses full AVX-512 vectors in XLA's own loops).
- --xla_backend_extra_options=xla_cpu_use_multi_output_fusion.
Every worker runs with GTA_JAX_XLA_DEFAULTS=0, so 'default' is XLA's own setting; gta_jax's
(gta_jax/xla_flags.py, what a user's run gets on jaxlib 0.10) is the ynn_no_conv configuration.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONFIGS = {
    'default': '',
    'ynn_no_reduce': '--xla_cpu_experimental_ynn_fusion_type=-reduce',
    'ynn_no_conv': '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',
    'ynn_no_reduce_no_conv':
        '--xla_cpu_experimental_ynn_fusion_type=-reduce,-individual_convolution',
    'ynn_off': '--xla_cpu_experimental_ynn_fusion_type=',
    'vector_width_512': '--xla_cpu_prefer_vector_width=512',
    'multi_output_fusion': '--xla_backend_extra_options=xla_cpu_use_multi_output_fusion',
}
REPS = {'train': 2, 'inference': 6}  # calls per worker turn


def _cases(args):
  return [(model, form, batch) for batch in args.batches for model in args.models
          for form in args.forms]


def worker(args):
  """Compile every case under this process's XLA_FLAGS, report first-step figures, then time on
  request: one line 'CASE KIND REPS' in -> one JSON list of per-call seconds out."""
  import jax
  import numpy as np
  import train_step  # benchmarks/train_step.py (this script's folder is on sys.path)
  compiled, check = {}, {}
  for i, (model, form, batch) in enumerate(_cases(args)):
    step, step_args, infer, infer_args = train_step.build(model, args.image_size, batch, form)
    train_fn = step.lower(*step_args).compile()
    infer_fn = infer.lower(*infer_args).compile()
    compiled[i] = {'train': (train_fn, step_args), 'inference': (infer_fn, infer_args)}
    _, metrics = train_fn(*step_args)
    check[i] = {'loss': float(metrics['loss'][0]), 'grad_norm': float(metrics['grad_norm']),
                'p_fake': np.asarray(infer_fn(*infer_args)[0]).tolist()}
    for fn, fn_args in compiled[i].values():  # warm-up
      jax.block_until_ready(fn(*fn_args))
  print(json.dumps({'ready': True, 'check': check}), flush=True)
  for line in sys.stdin:
    case, kind, reps = line.split()
    fn, fn_args = compiled[int(case)][kind]
    samples = []
    for _ in range(int(reps)):
      start = time.perf_counter()
      jax.block_until_ready(fn(*fn_args))
      samples.append(time.perf_counter() - start)
    print(json.dumps(samples), flush=True)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--batches', default='64,256', type=lambda s: [int(b) for b in s.split(',')])
  parser.add_argument('--models', default='primary,primary_dct', type=lambda s: s.split(','))
  parser.add_argument('--forms', default='cpu,lax', type=lambda s: s.split(','))
  parser.add_argument('--configs', default=','.join(CONFIGS), type=lambda s: s.split(','))
  parser.add_argument('--image-size', type=int, default=128)
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--json')
  parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return worker(args)
  assert args.configs[0] == 'default', 'ratios are to the first configuration: default'
  passthrough = ['--batches', ','.join(map(str, args.batches)), '--models', ','.join(args.models),
                 '--forms', ','.join(args.forms), '--image-size', str(args.image_size)]
  workers = {}
  for name in args.configs:  # compiled side by side; nothing is timed until all are ready
    # GTA_JAX_XLA_DEFAULTS=0: 'default' is XLA's own, not gta_jax's CPU_DEFAULTS (ynn_no_conv).
    env = dict(os.environ, GTA_JAX_XLA_DEFAULTS='0', XLA_FLAGS=' '.join(
        f for f in (os.environ.get('XLA_FLAGS', ''), CONFIGS[name]) if f))
    workers[name] = subprocess.Popen([sys.executable, __file__, '--worker', *passthrough],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env)
  checks = {name: json.loads(proc.stdout.readline())['check'] for name, proc in workers.items()}
  cases = _cases(args)
  samples = {(name, c, kind): [] for name in workers for c in range(len(cases))
             for kind in REPS}
  per_round = {key: [] for key in samples}
  for r in range(args.rounds):
    order = args.configs[r % len(args.configs):] + args.configs[:r % len(args.configs)]
    for c in range(len(cases)):
      for kind, reps in REPS.items():
        for name in order:
          proc = workers[name]
          proc.stdin.write(f'{c} {kind} {reps}\n')
          proc.stdin.flush()
          got = json.loads(proc.stdout.readline())
          samples[name, c, kind] += got
          per_round[name, c, kind].append(statistics.median(got))
    print(f'round {r + 1}/{args.rounds} done', file=sys.stderr, flush=True)
  for proc in workers.values():
    proc.stdin.close()
    proc.wait()
  rows = []
  for c, (model, form, batch) in enumerate(cases):
    base_check = checks['default'][str(c)]
    for kind in REPS:
      row = {'model': model, 'form': form, 'batch': batch, 'step': kind, 'configs': {}}
      for name in args.configs:
        ratios = [d / s for d, s in zip(per_round['default', c, kind], per_round[name, c, kind])]
        check = checks[name][str(c)]
        row['configs'][name] = {
            'images_per_sec': batch / statistics.median(samples[name, c, kind]),
            'vs_default_median': statistics.median(ratios),
            'vs_default_min': min(ratios), 'vs_default_max': max(ratios),
            'loss_diff': abs(check['loss'] - base_check['loss']),
            'grad_norm_rel_diff': abs(check['grad_norm'] / base_check['grad_norm'] - 1),
            'p_fake_max_diff': max(abs(a - b) for a, b in zip(check['p_fake'],
                                                              base_check['p_fake']))}
      rows.append(row)
  import common  # benchmarks/common.py (imports JAX: after the workers are done)
  common.write_json(args.json, {'image_size': args.image_size, 'rounds': args.rounds,
                                'calls_per_turn': REPS, 'flags': {n: CONFIGS[n] for n in args.configs},
                                'rows': rows, 'machine': common.machine()})


if __name__ == '__main__':
  main()
