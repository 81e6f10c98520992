"""TF-'SAME' 2-D convolutions, lowered for speed on XLA's CPU backend.

The networks here have 3-32 channels, where XLA's CPU convolution is weakest, and most of all in
the gradients autodiff derives from it (measured per layer in benchmarks/conv_forms.py):
the input gradient of a stride-2 convolution (an lhs-dilated convolution) runs 5-9x slower than
its forward pass, and the kernel gradient of a whole batch slows down super-linearly with the
batch (2-8x per image from 32 to 256 images). `conv_same(..., impl='cpu')` is a
`jax.custom_vjp` computing the same function from pieces that are fast there:

- inference, input channels <= 4 (the primary's first two layers; see _elementwise_pays): a
  sum of k*k*C shifted, scaled copies of the input, which XLA fuses into one elementwise loop
  (3-30x faster than its convolution on these shapes). Under differentiation the forward stays
  lax.conv: XLA would otherwise recompute that loop inside every consumer of its output;
- input gradient, k x k / stride 1: the stride-1 convolution of the output gradient with the
  flipped kernel;
- input gradient, 4x4 / stride 2: a 2x2 / stride-1 convolution of the output gradient on the
  space-to-depth layout, then depth-to-space;
- kernel gradient: XLA's own, summed over chunks of KERNEL_GRADIENT_CHUNK images.

`impl='lax'` is plain `lax.conv_general_dilated`. `impl='onednn'` (CPU only, optional) calls
oneDNN's convolutions through XLA's FFI (gta_jax/models/onednn.py, built on first use; float32
only, other dtypes take the 'cpu' form). All give the same outputs and gradients up to float32
rounding (tests/models/test_convolution.py, test_onednn.py). 'auto' picks 'onednn' on the CPU
backend when it is available, else 'cpu', and 'lax' elsewhere: the rewrites were measured on CPU
only, so accelerators keep XLA's own convolution.
Forward-mode autodiff (jax.jvp) of the 'cpu' form is not defined (custom_vjp); nothing here
uses it.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from gta_jax.models import onednn

DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')
IMPLS = ('auto', 'cpu', 'lax', 'onednn')
# Input channels up to which the forward pass is an elementwise sum of shifted copies.
ELEMENTWISE_MAX_CHANNELS = 4
# Images per kernel-gradient convolution (the fastest of 1-64 per layer at batches 32-256).
KERNEL_GRADIENT_CHUNK = 8


def resolve_impl(impl: str) -> str:
  if impl not in IMPLS:
    raise ValueError(f'unknown convolution impl {impl!r}; use one of {", ".join(IMPLS)}.')
  if impl == 'auto':
    if jax.default_backend() != 'cpu':
      return 'lax'
    return 'onednn' if onednn.available() else 'cpu'
  if impl == 'onednn':
    if jax.default_backend() != 'cpu':
      raise ValueError(f"'onednn' runs on the CPU backend only (this one is "
                       f"{jax.default_backend()}); use 'auto' or 'lax'.")
    if not onednn.available():
      raise ValueError(f"'onednn' is not available here: {onednn.unavailable_reason()}; "
                       "use 'auto' or 'cpu'.")
  return impl


def describe(impl: str) -> str:
  """One line for the run log: which form `impl` resolves to here, and why not oneDNN."""
  resolved = resolve_impl(impl)
  text = {'lax': "XLA's convolution", 'cpu': 'the pure-XLA CPU form',
          'onednn': "oneDNN through XLA's FFI"}[resolved]
  if resolved == 'cpu' and impl == 'auto':
    text += f' (oneDNN unavailable: {onednn.unavailable_reason()})'
  return f'convolutions: {resolved}, {text}'


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TF's SAME padding (more at the end when odd), as lax.conv's 'SAME' computes it."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def lax_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), 'SAME',
                                      dimension_numbers=DIMENSION_NUMBERS)


def conv_same(x: jax.Array, kernel: jax.Array, stride: int, impl: str = 'auto') -> jax.Array:
  """[B, H, W, C] * [k, k, C, O] -> [B, ceil(H/s), ceil(W/s), O], TF 'SAME' padding, no bias."""
  impl = resolve_impl(impl)
  if impl == 'lax':
    return lax_conv(x, kernel, stride)
  if impl == 'onednn' and x.dtype == kernel.dtype == jnp.float32:
    return _onednn_conv(x, kernel, stride)
  return _cpu_conv(x, kernel, stride)


def _padded(x: jax.Array, kernel_size: int, stride: int) -> jax.Array:
  (top, bottom), (left, right) = (same_padding(x.shape[1], kernel_size, stride),
                                  same_padding(x.shape[2], kernel_size, stride))
  return jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def _elementwise_pays(kernel_shape, stride: int) -> bool:
  """Few input channels, and few outputs per input pixel read.

  XLA fuses an elementwise producer (e.g. the previous layer's elementwise conv + ReLU) into
  this loop and recomputes it for every tap and output channel that reads it; a stride-1
  conv to more than 4 channels then loses to lax.conv (gandct-conv inference at batch 64: 340
  images/s with its 3->8 layer elementwise, 720 without, 513 all lax.conv), while stride 2 (the
  primary's 3->8 layer) or <= 4 outputs win.
  """
  _, _, channels, out = kernel_shape
  return channels <= ELEMENTWISE_MAX_CHANNELS and (stride > 1 or out <= ELEMENTWISE_MAX_CHANNELS)


def _elementwise_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """Sum over taps and input channels of strided shifted copies times a kernel row: one fusion."""
  k, _, channels, _ = kernel.shape
  out_h, out_w = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
  padded = _padded(x, k, stride)
  total = None
  for i in range(k):
    for j in range(k):
      window = jax.lax.slice(padded, (0, i, j, 0),
                             (x.shape[0], i + stride * (out_h - 1) + 1,
                              j + stride * (out_w - 1) + 1, channels), (1, stride, stride, 1))
      for c in range(channels):
        term = window[..., c:c + 1] * kernel[i, j, c]
        total = term if total is None else total + term
  return total


def _space_to_depth(x: jax.Array) -> jax.Array:
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // 2, w // 2, 4 * c)  # channels ordered (row parity, col parity, c)


def _depth_to_space(x: jax.Array, channels: int) -> jax.Array:
  b, h, w, _ = x.shape
  x = x.reshape(b, h, w, 2, 2, channels).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, 2 * h, 2 * w, channels)


def _input_gradient(x_shape, kernel: jax.Array, stride: int, dy: jax.Array) -> jax.Array:
  """Transposed convolution of dy, as stride-1 convolutions where the shapes allow."""
  k, _, channels, _ = kernel.shape
  _, h, w, _ = x_shape
  pads = [same_padding(h, k, stride), same_padding(w, k, stride)]
  flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)  # [k, k, O, C]
  if stride == 1:
    return jax.lax.conv_general_dilated(
        dy, flipped, (1, 1), [(k - 1 - lo, k - 1 - hi) for lo, hi in pads],
        dimension_numbers=DIMENSION_NUMBERS)
  if stride == 2 and k == 4 and h % 2 == 0 and w % 2 == 0:
    # Forward == 2x2 VALID conv of space_to_depth(pad(x, 1)) with the kernel regrouped by
    # parity; its input gradient is a full 2x2 conv of dy, then depth-to-space and unpad.
    regrouped = kernel.reshape(2, 2, 2, 2, channels, -1).transpose(0, 2, 1, 3, 4, 5)
    regrouped = regrouped.reshape(2, 2, 4 * channels, -1)
    flipped2 = jnp.flip(regrouped, (0, 1)).transpose(0, 1, 3, 2)
    grad_s2d = jax.lax.conv_general_dilated(dy, flipped2, (1, 1), ((1, 1), (1, 1)),
                                            dimension_numbers=DIMENSION_NUMBERS)
    return _depth_to_space(grad_s2d, channels)[:, 1:-1, 1:-1, :]
  x_zeros = jnp.zeros(x_shape, dy.dtype)
  return jax.vjp(lambda x_: lax_conv(x_, kernel, stride), x_zeros)[1](dy)[0]


def _kernel_gradient(x: jax.Array, kernel: jax.Array, stride: int, dy: jax.Array) -> jax.Array:
  """Sum of per-chunk kernel gradients: XLA's is fastest on a few images at a time."""
  total = None
  for start in range(0, x.shape[0], KERNEL_GRADIENT_CHUNK):
    x_chunk = x[start:start + KERNEL_GRADIENT_CHUNK]
    grad = jax.vjp(lambda k_: lax_conv(x_chunk, k_, stride), kernel)[1](
        dy[start:start + KERNEL_GRADIENT_CHUNK])[0]
    total = grad if total is None else total + grad
  return total


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _cpu_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  if _elementwise_pays(kernel.shape, stride):
    return _elementwise_conv(x, kernel, stride)
  return lax_conv(x, kernel, stride)


def _cpu_conv_fwd(x, kernel, stride):
  return lax_conv(x, kernel, stride), (x, kernel)


def _cpu_conv_bwd(stride, residuals, dy):
  x, kernel = residuals
  return _input_gradient(x.shape, kernel, stride, dy), _kernel_gradient(x, kernel, stride, dy)


_cpu_conv.defvjp(_cpu_conv_fwd, _cpu_conv_bwd)


# ------------------------------------------------------------------------------- oneDNN form


def _onednn_call(target: str, shape, *operands, x_shape, kernel_size: int, stride: int,
                 **attributes):
  """One of onednn.TARGETS with TF-SAME padding (and `attributes`) as attributes; under vmap
  (e.g. heads_form='vmap') it runs once per mapped element. shape: the result's, or a tuple of
  them."""
  (top, bottom), (left, right) = (same_padding(x_shape[1], kernel_size, stride),
                                  same_padding(x_shape[2], kernel_size, stride))
  result = (tuple(jax.ShapeDtypeStruct(s, jnp.float32) for s in shape)
            if isinstance(shape[0], tuple) else jax.ShapeDtypeStruct(shape, jnp.float32))
  return jax.ffi.ffi_call(target, result, vmap_method='sequential')(
      *operands, stride=np.int64(stride), pad_top=np.int64(top), pad_left=np.int64(left),
      pad_bottom=np.int64(bottom), pad_right=np.int64(right), **attributes)


def _output_shape(x, kernel, stride):
  return (x.shape[0], -(-x.shape[1] // stride), -(-x.shape[2] // stride), kernel.shape[3])


def _onednn_forward(x, kernel, stride):
  return _onednn_call('GtaDnnlConvFwd', _output_shape(x, kernel, stride), x, kernel,
                      x_shape=x.shape, kernel_size=kernel.shape[0], stride=stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _onednn_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """oneDNN's convolution (float32, no bias); its handlers are built by gta_jax/models/onednn.py."""
  return _onednn_forward(x, kernel, stride)


def _onednn_conv_fwd(x, kernel, stride):
  return _onednn_forward(x, kernel, stride), (x, kernel)


def _onednn_conv_bwd(stride, residuals, dy):
  x, kernel = residuals
  geometry = dict(x_shape=x.shape, kernel_size=kernel.shape[0], stride=stride)
  return (_onednn_call('GtaDnnlConvBwdData', x.shape, dy, kernel, **geometry),
          _onednn_call('GtaDnnlConvBwdWeights', kernel.shape, x, dy, **geometry))


_onednn_conv.defvjp(_onednn_conv_fwd, _onednn_conv_bwd)


# ------------------------------------------------------------------- fused inference epilogue


def conv_bias_relu(x: jax.Array, kernel: jax.Array, bias: jax.Array, stride: int,
                   impl: str = 'auto', relu: bool = True) -> jax.Array:
  """relu(conv_same(x, kernel) + bias) (no ReLU if not `relu`). On the `onednn` form one oneDNN
  primitive with the bias and the ReLU as post-ops writes the output once (the caller folds an
  inference BatchNorm into kernel and bias); elsewhere the same function in XLA. Differentiable
  (Grad-CAM takes gradients of inference-mode models)."""
  impl = resolve_impl(impl)
  if impl == 'onednn' and x.dtype == kernel.dtype == bias.dtype == jnp.float32:
    return _onednn_conv_bias(x, kernel, bias, stride, relu)
  y = conv_same(x, kernel, stride, impl) + bias
  return jax.nn.relu(y) if relu else y


def _onednn_bias_forward(x, kernel, bias, stride, relu):
  return _onednn_call('GtaDnnlConvBiasFwd', _output_shape(x, kernel, stride), x, kernel, bias,
                      x_shape=x.shape, kernel_size=kernel.shape[0], stride=stride,
                      relu=np.int64(relu))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _onednn_conv_bias(x, kernel, bias, stride, relu):
  return _onednn_bias_forward(x, kernel, bias, stride, relu)


def _onednn_conv_bias_fwd(x, kernel, bias, stride, relu):
  y = _onednn_bias_forward(x, kernel, bias, stride, relu)
  return y, (x, kernel, y)


def _onednn_conv_bias_bwd(stride, relu, residuals, dy):
  x, kernel, y = residuals
  if relu:
    dy = jnp.where(y > 0, dy, 0.0)
  geometry = dict(x_shape=x.shape, kernel_size=kernel.shape[0], stride=stride)
  kernel_grad, bias_grad = _onednn_call(
      'GtaDnnlConvBwdWeightsBias', (kernel.shape, kernel.shape[-1:]), x, dy, **geometry)
  return (_onednn_call('GtaDnnlConvBwdData', x.shape, dy, kernel, **geometry), kernel_grad,
          bias_grad)


_onednn_conv_bias.defvjp(_onednn_conv_bias_fwd, _onednn_conv_bias_bwd)


def batch_norm_relu_train(x: jax.Array, scale: jax.Array, shift: jax.Array, epsilon: float):
  """Training BatchNorm then ReLU over [B, H, W, C] (statistics over B, H, W; the biased
  variance, as Flax's BatchNorm) in one oneDNN primitive each way (onednn form only) ->
  (output, batch mean [C], batch variance [C]). The statistics feed the running averages only:
  their cotangents are dropped."""
  return _onednn_bn_relu(x, scale, shift, float(epsilon))


def _bn_relu_forward(x, scale, shift, epsilon):
  channels = x.shape[-1]
  workspace = onednn.batch_norm_workspace_bytes(x.shape, epsilon)
  return jax.ffi.ffi_call(
      'GtaDnnlBnReluFwd',
      (jax.ShapeDtypeStruct(x.shape, jnp.float32), jax.ShapeDtypeStruct((channels,), jnp.float32),
       jax.ShapeDtypeStruct((channels,), jnp.float32),
       jax.ShapeDtypeStruct((workspace,), jnp.uint8)),
      vmap_method='sequential')(x, scale, shift, epsilon=np.float32(epsilon))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _onednn_bn_relu(x, scale, shift, epsilon):
  return _bn_relu_forward(x, scale, shift, epsilon)[:3]


def _onednn_bn_relu_fwd(x, scale, shift, epsilon):
  y, mean, var, workspace = _bn_relu_forward(x, scale, shift, epsilon)
  return (y, mean, var), (x, mean, var, scale, workspace)


def _onednn_bn_relu_bwd(epsilon, residuals, cotangents):
  x, mean, var, scale, workspace = residuals
  dy = cotangents[0]
  return tuple(jax.ffi.ffi_call(
      'GtaDnnlBnReluBwd',
      (jax.ShapeDtypeStruct(x.shape, jnp.float32), jax.ShapeDtypeStruct(scale.shape, jnp.float32),
       jax.ShapeDtypeStruct(scale.shape, jnp.float32)),
      vmap_method='sequential')(x, dy, mean, var, scale, workspace, epsilon=np.float32(epsilon)))


_onednn_bn_relu.defvjp(_onednn_bn_relu_fwd, _onednn_bn_relu_bwd)
