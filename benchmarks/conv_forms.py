"""Each primary conv's forward+backward (input and kernel gradients) in four lowerings.

python benchmarks/conv_forms.py [--batch 64] [--json OUT]

- lax: jax.lax.conv_general_dilated (what the models use today);
- patches: conv_general_dilated_patches + one matmul;
- s2d (4x4 stride-2 layers only): space-to-depth of the padded input, then a 2x2 stride-1 conv;
- cpu: gta_jax.convolution's custom VJP (the default on CPU), which keeps lax's forward under
  differentiation and replaces the gradients.
Each form's output and gradients are checked against lax in the same run (max abs difference).
"""
import argparse

import jax
import jax.numpy as jnp

import common  # benchmarks/common.py
from gta_jax.models import convolution

DN = convolution.DIMENSION_NUMBERS
# (in channels, out channels, kernel, stride, input size) of the primary's six convs at 128 px.
LAYERS = [(3, 3, 3, 1, 128), (3, 8, 4, 2, 128), (8, 16, 3, 1, 64), (16, 16, 4, 2, 64),
          (16, 32, 3, 1, 32), (32, 32, 4, 2, 32)]


def patches_conv(x, w, stride):
  k, _, c, o = w.shape
  p = jax.lax.conv_general_dilated_patches(x, (k, k), (stride, stride), 'SAME',
                                           dimension_numbers=DN)  # [..., C*k*k], channel-major
  return p @ w.transpose(2, 0, 1, 3).reshape(c * k * k, o)


def s2d_conv(x, w, stride):
  """4x4/s2 SAME (pad 1 each side on even sizes) == 2x2/s1 VALID conv on space-to-depth(x_pad)."""
  assert stride == 2 and w.shape[0] == 4
  b, h, wd, c = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  y = xp.reshape(b, h // 2 + 1, 2, wd // 2 + 1, 2, c).transpose(0, 1, 3, 2, 4, 5)
  y = y.reshape(b, h // 2 + 1, wd // 2 + 1, 4 * c)          # channels ordered (r_h, r_w, c)
  w2 = w.reshape(2, 2, 2, 2, c, -1).transpose(0, 2, 1, 3, 4, 5).reshape(2, 2, 4 * c, -1)
  return jax.lax.conv_general_dilated(y, w2, (1, 1), 'VALID', dimension_numbers=DN)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--json')
  args = parser.parse_args()
  key = jax.random.key(0)
  rows = []
  for cin, cout, k, stride, size in LAYERS:
    x = jax.random.normal(key, (args.batch, size, size, cin))
    w = jax.random.normal(jax.random.key(1), (k, k, cin, cout)) * 0.1
    forms = {'lax': convolution.lax_conv, 'patches': patches_conv,
             'cpu': lambda x, w, stride: convolution.conv_same(x, w, stride, 'cpu')}
    if stride == 2:
      forms['s2d'] = s2d_conv
    reference = None
    row = {'layer': f'{k}x{k}/s{stride} {cin}->{cout} @{size}'}
    for name, fn in forms.items():
      grad = jax.jit(jax.value_and_grad(lambda x, w, fn=fn: (fn(x, w, stride) ** 2).sum(),
                                        argnums=(0, 1)))
      out = grad(x, w)
      if reference is None:
        reference = out
      diff = max(float(jnp.abs(a - b).max() / (jnp.abs(b).max() + 1e-9))
                 for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(reference)))
      row[name] = {'ms': 1000 * common.time_fn(grad, x, w, repeats=3, min_seconds=0.5),
                   'max_rel_diff_vs_lax': diff}
    rows.append(row)
    print(row, flush=True)
  common.write_json(args.json, {'batch': args.batch, 'layers': rows, 'machine': common.machine()})


if __name__ == '__main__':
  main()
