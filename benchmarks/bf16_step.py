"""bfloat16 convolutions (float32 accumulation) against float32: what XLA's CPU backend makes of
them, the speed of the primary's train and inference steps, and the difference on one batch.

python benchmarks/bf16_step.py [--batches 64,256] [--forms cpu,lax] [--rounds 6] [--json OUT]

The bf16 variant is the same step traced while jax.lax.conv_general_dilated casts both operands
to bfloat16 and asks for a float32 result (preferred_element_type): every convolution of the
forward pass and of the 'cpu' form's backward pass; autodiff's own transposes of the 'lax' form
inherit bf16 operands from the forward. (jax.default_matmul_precision('bfloat16') leaves the
HLO's operands float32 and XLA CPU ignores the precision config, so it is not measured.)

Reported, per case: how many of the optimised HLO's convolutions and dots read bf16 operands
(XLA CPU converts a bf16 convolution's operands back to float32 before running it; a bf16 dot
goes to YNNPACK as bf16); train / inference images/s of both variants in alternating rounds
and their ratio; the difference of loss, gradients (relative L2 per leaf) and inference logits on one batch.
Plus a matmul-only check: float32 against bf16 x bf16 -> float32 dots at the im2col shapes of
the primary's convolutions, where AMX/AVX512_BF16 could pay if the convolutions were matmuls.
"""
import argparse
import contextlib
import re
import statistics
import time

import jax
import jax.numpy as jnp

import common  # benchmarks/common.py
import train_step  # benchmarks/train_step.py
from gta_jax.families import base
from gta_jax.families import losses

# (in channels, out channels, kernel, stride, input size) of the primary's convolutions at 128 px.
LAYERS = [(3, 3, 3, 1, 128), (3, 8, 4, 2, 128), (8, 16, 3, 1, 64), (16, 16, 4, 2, 64),
          (16, 32, 3, 1, 32), (32, 32, 4, 2, 32)]


@contextlib.contextmanager
def bf16_convolutions():
  original = jax.lax.conv_general_dilated

  def conv(lhs, rhs, *args, preferred_element_type=None, **kwargs):
    del preferred_element_type
    out = original(lhs.astype(jnp.bfloat16), rhs.astype(jnp.bfloat16), *args,
                   preferred_element_type=jnp.float32, **kwargs)
    return out.astype(lhs.dtype)

  jax.lax.conv_general_dilated = conv
  try:
    yield
  finally:
    jax.lax.conv_general_dilated = original


def operand_dtypes(hlo: str, opcode: str) -> list:
  """Operand dtypes of each `opcode` instruction in optimised HLO text."""
  types = dict(re.findall(r'%([\w.\-]+)(?::| =) (\w+)\[', hlo))
  return [(types.get(a), types.get(b))
          for a, b in re.findall(rf' {opcode}\(%([\w.\-]+), %([\w.\-]+)', hlo)]


def gradients(model_name, form, batch, image_size, bf16):
  """-> (loss, grads, p_fake) of the primary on benchmarks/train_step.py's batch."""
  context = bf16_convolutions() if bf16 else contextlib.nullcontext()
  with context:
    step, (state, constants, data, labels, _), infer, infer_args = train_step.build(
        model_name, image_size, batch, form)
    model = step.__wrapped__.keywords['model']  # the functools.partial inside jax.jit
    input_kind = step.__wrapped__.keywords['input_kind']

    def loss_of(params):
      x = base.preprocess(data['image'], input_kind, constants)
      out, _ = model.apply({'params': params, 'batch_stats': state.batch_stats}, x, train=True,
                           mutable=['batch_stats'])
      return losses.sigmoid_bce(out.logit, labels, data['mask'])

    loss, grads = jax.jit(jax.value_and_grad(loss_of))(state.params)
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    logits = jax.jit(lambda v: model.apply(
        v, base.preprocess(data['image'], input_kind, constants), train=False).logit)(variables)
  return loss, grads, logits


def max_differences(a, b) -> dict:
  """bf16 run `a` against float32 run `b`: loss, each gradient leaf's relative L2 error
  (|g_a - g_b| / |g_b|) and its largest element error relative to the leaf's largest element,
  inference logits (BatchNorm in inference mode)."""
  (loss_a, grads_a, logit_a), (loss_b, grads_b, logit_b) = a, b
  leaves = {}
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(grads_a), jax.tree.leaves(grads_b)):
    leaves[jax.tree_util.keystr(path)] = {
        'rel_l2': float(jnp.linalg.norm(x - y) / (jnp.linalg.norm(y) + 1e-30)),
        'max_abs_over_max': float(jnp.abs(x - y).max() / (jnp.abs(y).max() + 1e-30))}
  # Summaries over the kernels: the biases of convolutions followed by BatchNorm have zero
  # gradient up to rounding (lax and cpu forms in float32 already differ by 100% there).
  kernels = [v['rel_l2'] for k, v in leaves.items() if 'kernel' in k]
  return {'loss_abs': float(abs(loss_a - loss_b)), 'loss_f32': float(loss_b),
          'kernel_gradient_rel_l2_max': max(kernels),
          'kernel_gradient_rel_l2_median': statistics.median(kernels),
          'logit_max_abs': float(jnp.abs(logit_a - logit_b).max()),
          'logit_max_abs_f32': float(jnp.abs(logit_b).max()),
          'gradient_leaves': leaves}


def interleaved(fns: dict, rounds: int, reps: int) -> dict:
  """Per-round median seconds of each compiled (fn, args), rounds alternating between them."""
  per_round = {name: [] for name in fns}
  for r in range(rounds):
    names = list(fns)[r % 2:] + list(fns)[:r % 2]
    for name in names:
      fn, args = fns[name]
      samples = []
      for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        samples.append(time.perf_counter() - start)
      per_round[name].append(statistics.median(samples))
  return per_round


def matmul_check(batch: int, rounds: int) -> list:
  rows = []
  key = jax.random.key(0)
  f32 = jax.jit(lambda a, b: a @ b)
  bf16 = jax.jit(lambda a, b: jnp.dot(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                                      preferred_element_type=jnp.float32))
  shapes = [(batch * (size // stride) ** 2, k * k * cin, cout)
            for cin, cout, k, stride, size in LAYERS] + [(2048, 2048, 2048)]
  for m, k, n in shapes:
    a = jax.random.normal(key, (m, k))
    b = jax.random.normal(key, (k, n))
    fns = {'f32': (f32, (a, b)), 'bf16': (bf16, (a, b))}
    for fn, args in fns.values():
      jax.block_until_ready(fn(*args))
    per_round = interleaved(fns, rounds, 3)
    ratios = [x / y for x, y in zip(per_round['f32'], per_round['bf16'])]
    rows.append({'m_k_n': [m, k, n],
                 'f32_gflops': 2 * m * k * n / statistics.median(per_round['f32']) / 1e9,
                 'bf16_gflops': 2 * m * k * n / statistics.median(per_round['bf16']) / 1e9,
                 'bf16_speedup_median': statistics.median(ratios),
                 'bf16_speedup_min': min(ratios), 'bf16_speedup_max': max(ratios),
                 'bf16_dot_operands': operand_dtypes(bf16.lower(a, b).compile().as_text(), 'dot')})
    print(rows[-1], flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--model', default='primary', choices=['primary', 'primary_dct'])
  parser.add_argument('--batches', default='64,256', type=lambda s: [int(b) for b in s.split(',')])
  parser.add_argument('--forms', default='cpu,lax', type=lambda s: s.split(','))
  parser.add_argument('--image-size', type=int, default=128)
  parser.add_argument('--rounds', type=int, default=6)
  parser.add_argument('--json')
  args = parser.parse_args()
  rows = []
  for batch in args.batches:
    for form in args.forms:
      fns, hlo = {}, {}
      for variant in ('f32', 'bf16'):
        context = bf16_convolutions() if variant == 'bf16' else contextlib.nullcontext()
        with context:
          step, step_args, infer, infer_args = train_step.build(args.model, args.image_size,
                                                                batch, form)
          train_c = step.lower(*step_args).compile()
          infer_c = infer.lower(*infer_args).compile()
        fns[variant] = {'train': (train_c, step_args), 'inference': (infer_c, infer_args)}
        hlo[variant] = {kind: {op: operand_dtypes(c.as_text(), op) for op in ('convolution', 'dot')}
                        for kind, c in (('train', train_c), ('inference', infer_c))}
        for fn, fn_args in fns[variant].values():
          jax.block_until_ready(fn(*fn_args))
      row = {'model': args.model, 'form': form, 'batch': batch,
             'differences': max_differences(
                 gradients(args.model, form, batch, args.image_size, True),
                 gradients(args.model, form, batch, args.image_size, False))}
      for kind in ('train', 'inference'):
        per_round = interleaved({v: fns[v][kind] for v in fns}, args.rounds,
                                2 if kind == 'train' else 6)
        ratios = [x / y for x, y in zip(per_round['f32'], per_round['bf16'])]
        row[kind] = {
            'f32_images_per_sec': batch / statistics.median(per_round['f32']),
            'bf16_images_per_sec': batch / statistics.median(per_round['bf16']),
            'bf16_speedup_median': statistics.median(ratios),
            'bf16_speedup_min': min(ratios), 'bf16_speedup_max': max(ratios),
            'bf16_convolutions_with_bf16_operands': sum(
                'bf16' in pair for pair in hlo['bf16'][kind]['convolution']),
            'bf16_convolutions': len(hlo['bf16'][kind]['convolution']),
            'bf16_dots_with_bf16_operands': sum('bf16' in p for p in hlo['bf16'][kind]['dot'])}
      rows.append(row)
      print(row, flush=True)
  record = {'image_size': args.image_size, 'rounds': args.rounds, 'steps': rows,
            'matmuls_at_conv_shapes': matmul_check(min(args.batches), args.rounds),
            'machine': common.machine()}
  common.write_json(args.json, record)


if __name__ == '__main__':
  main()
