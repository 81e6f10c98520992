"""Where one train (or inference) step's time goes: XLA's thunks per op, grouped by layer and role.

python benchmarks/profile_step.py [--model primary] [--form cpu|lax|onednn] [--batch 64] [--steps 5]
    [--inference] [--keras-python PY] [--json OUT]

The step of benchmarks/train_step.py is compiled, warmed up and traced for --steps calls with
jax.profiler (XLA_FLAGS --xla_cpu_enable_xprof_traceme=true, set here before JAX starts). Each
thunk event (one fusion, convolution, YNNPACK fusion, copy, ...) on XLA's threads is matched to
its instruction in the optimised HLO, whose metadata names the layer (conv_0N, bn_0N, ...) and
whether it is the forward or the backward pass; a backward convolution whose output is the size
of a kernel is a kernel gradient, any other an input gradient. Times attribute
the steps' wall time (wall_attribution: an interval is shared by the thunks running in it, or,
when none runs, given to the last one started: Eigen's convolutions queue their work and return,
so their thunk events alone miss it), divided by the steps.

--keras-python: also runs benchmarks/keras_primary.py --profile-steps in that interpreter with
ONEDNN_VERBOSE=1 and sums oneDNN's own per-primitive execution times the same way.
"""
import argparse
import collections
import glob
import json
import os
import pathlib
import re
import subprocess
import tempfile

os.environ['XLA_FLAGS'] = ' '.join(
    f for f in (os.environ.get('XLA_FLAGS', ''), '--xla_cpu_enable_xprof_traceme=true') if f)
import jax  # noqa: E402

import common  # noqa: E402  benchmarks/common.py
import train_step  # noqa: E402  benchmarks/train_step.py

# (in channels, out channels, kernel, stride, input size) of the primary's convolutions at 128 px.
LAYERS = [(3, 3, 3, 1, 128), (3, 8, 4, 2, 128), (8, 16, 3, 1, 64), (16, 16, 4, 2, 64),
          (16, 32, 3, 1, 32), (32, 32, 4, 2, 32)]
COLUMNS = ('convolution', 'input gradient', 'kernel gradient', 'other')
INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = (\w+)\[([\d,]*)\][^ ]* ([\w\-]+)\(')


def hlo_instructions(text: str) -> dict:
  """name -> (opcode, output elements, op_name metadata, the line) of every HLO instruction."""
  table = {}
  for line in text.splitlines():
    match = INSTRUCTION.match(line)
    if not match:
      continue
    name, _, dims, opcode = match.groups()
    elements = 1
    for d in filter(None, dims.split(',')):
      elements *= int(d)
    op_name = re.search(r'op_name="([^"]*)"', line)
    table[name] = (opcode, elements, op_name.group(1) if op_name else '', line)
  return table


def classify(name: str, instruction, kernel_elements: set) -> tuple[str, str, str]:
  """-> (layer, pass, kind) of one thunk."""
  opcode, elements, op_name, line = instruction
  layers = re.findall(r'\b(conv_0\d|bn_0\d|dense\w*|Dense_\d)', op_name) or \
      re.findall(r'__(conv_0\d|bn_0\d|dense\w*)__', line)
  layer = layers[-1] if layers else '-'
  direction = 'backward' if 'transpose(' in op_name else ('forward' if op_name else '-')
  target = re.search(r'custom_call_target="(GtaDnnlConv\w+)"', line)
  batch_norm = re.search(r'custom_call_target="GtaDnnlBnRelu\w+"', line)
  is_conv = opcode == 'convolution' or target is not None or (
      name.startswith('ynn_fusion') and op_name.endswith('conv_general_dilated'))
  library = 'YNNPACK' if name.startswith('ynn_fusion') else (
      'Eigen' if opcode == 'convolution' else 'oneDNN' if target else 'XLA loop')
  if target:  # the onednn form's FFI calls name their role
    role = {'GtaDnnlConvFwd': 'convolution', 'GtaDnnlConvBiasFwd': 'convolution',
            'GtaDnnlConvBwdData': 'input gradient', 'GtaDnnlConvBwdWeights': 'kernel gradient',
            'GtaDnnlConvBwdWeightsBias': 'kernel gradient'}[target.group(1)]
    kind = f'{role} ({library})'
  elif is_conv:
    role = ('kernel gradient' if direction == 'backward' and elements in kernel_elements
            else 'input gradient' if direction == 'backward' else 'convolution')
    kind = f'{role} ({library})'
  elif batch_norm:
    kind = 'BatchNorm-ReLU (oneDNN)'
  elif name.startswith('ynn_fusion'):
    kind = f'{op_name.rsplit("/", 1)[-1]} (YNNPACK)'
  elif 'copy' in name or 'transpose' in name:
    kind = 'transpose/copy'
  elif 'reduce' in name:
    kind = 'reduce (XLA)'
  else:
    kind = f'{opcode} (XLA loop)' if opcode != 'fusion' else 'elementwise fusion (XLA)'
  return layer, direction, kind


def wall_attribution(thunks: list, step_spans: list) -> collections.Counter:
  """Each nanosecond of the steps' wall time, shared equally by the thunk events running then on
  any thread, or, when none runs, given to the thunk that started last: an Eigen convolution's
  thunk event ends once it has queued its work, which then runs untraced on both threads."""
  bounds = sorted({t for start, end, _ in thunks for t in (start, end)}
                  | {t for span in step_spans for t in span})
  starts = collections.defaultdict(list)
  ends = collections.defaultdict(list)
  for i, (start, end, name) in enumerate(thunks):
    starts[start].append(i)
    ends[end].append(i)
  inside = collections.Counter()
  for start, end in step_spans:
    inside[start] += 1
    inside[end] -= 1
  result, active, last, depth = collections.Counter(), set(), None, 0
  for t, t_next in zip(bounds, bounds[1:]):
    depth += inside[t]
    active -= set(ends[t])
    for i in starts[t]:
      active.add(i)
      last = i
    if depth <= 0:
      continue
    share = (t_next - t) / 1e6
    if active:
      for i in active:
        result[thunks[i][2]] += share / len(active)
    elif last is not None:
      result[thunks[last][2]] += share
  return result


def profile(compiled, args_, steps: int, kernel_elements: set) -> dict:
  from jax.profiler import ProfileData
  table = hlo_instructions(compiled.as_text())
  with tempfile.TemporaryDirectory() as log_dir:
    with jax.profiler.trace(log_dir):
      for _ in range(steps):
        jax.block_until_ready(compiled(*args_))
    data = ProfileData.from_file(sorted(glob.glob(f'{log_dir}/**/*.xplane.pb', recursive=True))[-1])
  thunks, steps_spans = [], []
  for plane in data.planes:
    for line in plane.lines:
      for event in line.events:
        span = (event.start_ns, event.start_ns + event.duration_ns)
        if event.name in table:
          thunks.append((*span, event.name))
        elif event.name == 'ThunkExecutor::Execute (wait for completion)':
          steps_spans.append(span)
  per_thunk = wall_attribution(thunks, steps_spans)
  per_thunk = collections.Counter({n: ms / steps for n, ms in per_thunk.items()})
  thread_ms = sum(end - start for start, end, _ in thunks) / 1e6 / steps
  wall = sum(end - start for start, end in steps_spans) / 1e6 / steps
  groups = collections.Counter()
  for name, ms in per_thunk.items():
    groups[classify(name, table[name], kernel_elements)] += ms
  by_kind = collections.Counter()
  for (_, _, kind), ms in groups.items():
    by_kind[kind] += ms
  return {
      'step_wall_ms': wall, 'thunk_thread_ms': thread_ms,
      'attributed_wall_ms': sum(per_thunk.values()),
      'by_kind': [{'kind': k, 'ms': ms} for k, ms in by_kind.most_common()],
      'by_layer': jax_by_layer([{'layer': l, 'kind': k, 'ms': ms} for (l, _, k), ms in groups.items()]),
      'by_layer_pass_kind': [{'layer': l, 'pass': p, 'kind': k, 'ms': ms}
                             for (l, p, k), ms in groups.most_common()],
      'top_thunks': [{'thunk': n, 'ms': ms, 'op_name': table[n][2], 'opcode': table[n][0],
                      'output_elements': table[n][1]} for n, ms in per_thunk.most_common(25)]}


def jax_by_layer(groups: list) -> dict:
  """conv_0N / bn_0N merged into layer N: ms of its convolutions, input and kernel gradients, and
  everything else (BatchNorm, ReLU, bias, layout copies); unattributed thunks under '-'."""
  table = collections.defaultdict(lambda: dict.fromkeys(COLUMNS, 0.0))
  for g in groups:
    layer = g['layer'][-1] if re.fullmatch(r'(conv|bn)_0\d', g['layer']) else '-'
    column = next((c for c in COLUMNS[:3] if g['kind'].startswith(c)), 'other')
    table[layer][column] += g['ms']
  return dict(sorted(table.items()))


def keras_by_layer(primitives: list, image_size: int) -> dict:
  """oneDNN primitives mapped to the primary's layers by their shapes (convolutions by channels
  and input size, BatchNorm by channels and size): the same columns as jax_by_layer."""
  table = collections.defaultdict(lambda: dict.fromkeys(COLUMNS, 0.0))
  scale = image_size / 128
  for p in primitives:
    layer = '-'
    conv = re.match(r'mb\d+_ic(\d+)oc(\d+)_ih(\d+)', p['shape'])
    norm = re.match(r'mb\d+ic(\d+)ih(\d+)', p['shape'])
    for n, (cin, cout, _, stride, size) in enumerate(LAYERS, 1):
      size = int(size * scale)
      if conv and p['primitive'] == 'convolution' and (int(conv[1]), int(conv[2]), int(conv[3])) == (cin, cout, size):
        layer = str(n)
      elif norm and p['primitive'] == 'batch_normalization' and (int(norm[1]), int(norm[2])) == (cout, size // stride):
        layer = str(n)
    column = {'forward_training': 'convolution', 'forward_inference': 'convolution',
              'backward_data': 'input gradient', 'backward_weights': 'kernel gradient'}.get(
                  p['pass'], 'other') if p['primitive'] == 'convolution' else 'other'
    table[layer][column] += p['ms']
  return dict(sorted(table.items()))


def keras_onednn(python: str, model: str, image_size: int, batch: int, steps: int,
                 inference: bool) -> dict:
  """Per-primitive oneDNN execution times of the Keras step (ONEDNN_VERBOSE=1), per step."""
  script = pathlib.Path(__file__).with_name('keras_primary.py')
  flags = ['--dct'] if model.endswith('_dct') else []
  env = dict(os.environ, ONEDNN_VERBOSE='1')
  result = subprocess.run([python, str(script), '--image-size', str(image_size), '--batch',
                           str(batch), '--profile-steps', str(steps), *flags]
                          + (['--profile-inference'] if inference else []),
                          capture_output=True, text=True, check=True, env=env)
  lines = result.stdout.splitlines()
  start = lines.index('PROFILE_START')
  stop = lines.index('PROFILE_STOP')
  per_primitive = collections.Counter()
  for line in lines[start + 1:stop]:
    fields = line.split(',')
    if not line.startswith('onednn_verbose') or 'exec' not in fields[:3]:
      continue
    try:  # lines written by two threads at once can be cut: skipped
      float(fields[-1])
    except ValueError:
      continue
    at = fields.index('exec')
    kind, impl, prop = fields[at + 2], fields[at + 3], fields[at + 4]
    shape = fields[-2]
    per_primitive[(kind, prop, impl, shape)] += float(fields[-1]) / steps
  timing = json.loads([l for l in lines if l.startswith('{')][-1])
  primitives = [{'primitive': k, 'pass': p, 'implementation': i, 'shape': s, 'ms': ms}
                for (k, p, i, s), ms in per_primitive.most_common()]
  return {'step_wall_ms': timing['step_ms'], 'onednn_ms': sum(per_primitive.values()),
          'by_layer': keras_by_layer(primitives, image_size),
          'primitives': primitives}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--model', default='primary', choices=['primary', 'primary_dct'])
  parser.add_argument('--form', default='cpu', choices=['cpu', 'lax', 'onednn'])
  parser.add_argument('--image-size', type=int, default=128)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--inference', action='store_true')
  parser.add_argument('--keras-python')
  parser.add_argument('--json')
  args = parser.parse_args()
  step, step_args, infer, infer_args = train_step.build(args.model, args.image_size, args.batch,
                                                        args.form)
  fn, fn_args = (infer, infer_args) if args.inference else (step, step_args)
  compiled = fn.lower(*fn_args).compile()
  for _ in range(2):
    jax.block_until_ready(compiled(*fn_args))
  kernels = {p.size for p in jax.tree.leaves(step_args[0].params) if p.ndim == 4}
  record = {'model': args.model, 'form': args.form, 'batch': args.batch,
            'image_size': args.image_size, 'step': 'inference' if args.inference else 'train',
            'steps': args.steps, 'xla_flags': os.environ['XLA_FLAGS'],
            'jax': profile(compiled, fn_args, args.steps, kernels)}
  if args.keras_python:
    record['keras'] = keras_onednn(args.keras_python, args.model, args.image_size, args.batch,
                                   args.steps, args.inference)
  record['machine'] = common.machine()
  common.write_json(args.json, record)


if __name__ == '__main__':
  main()
