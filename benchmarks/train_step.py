"""Train and inference images/s of each network under both convolution lowerings, side by side.

python benchmarks/train_step.py --model primary --batch 64 [--keras-python PY] [--json OUT]

For each --forms lowering (gta_jax/models/convolution.py: 'lax' = XLA's convolution, 'cpu' = the
CPU-tuned custom VJP, 'onednn' = oneDNN's convolutions through XLA's FFI, with each conv ->
BatchNorm -> ReLU layer fused into oneDNN primitives; 'onednn_unfused' = the same convolutions,
BatchNorm and ReLU left to XLA, networks.layer_fusion(False)) the jitted train step (Adam, BatchNorm updates, preprocessing on the
device; for --model heads the phase III step of 4 heads on a frozen primary) and the jitted
inference step are compiled, then timed in alternating rounds so that both see the same machine
load. GFLOP per step is XLA's cost analysis of the lax form (the work both forms do); the peak
is a 2048x2048 float32 matmul timed in the same run.

--model primary_dct also times the DCT of the images alone (part of our inference step; Keras's
DCT model is given the DCT input) and reports the model's own inference speed without it.

--keras-python: an interpreter with TensorFlow (a benchmark-only venv; TensorFlow is not a
dependency of gta_jax) in which benchmarks/keras_primary.py times the authors' Keras model on
the same batch; its figures and the ratios against it are added to the output.
"""
import argparse
import functools
import json
import pathlib
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import common  # benchmarks/common.py
from gta_jax.families import base
from gta_jax.families import baseline
from gta_jax.families import losses
from gta_jax.families import proposed
from gta_jax.models import networks

NUM_HEADS = 4


def _data(batch: int, image_size: int):
  key = jax.random.key(0)
  images = np.asarray(jax.random.randint(key, (batch, image_size, image_size, 3), 0, 256), np.uint8)
  return {'image': images, 'label': np.arange(batch, dtype=np.int32) % 2,
          'mask': np.ones(batch, bool), 'source_id': np.arange(batch, dtype=np.int32) % 5}


def build(model: str, image_size: int, batch: int, conv_impl: str):
  """-> (train step, its args, inference step, its args), both jitted, for one lowering: the real
  steps of gta_jax/families/, given modules built with `conv_impl`."""
  key = jax.random.key(0)
  optimizer = optax.adam(1e-3, 0.9, 0.999, 1e-7)
  input_kind = 'dct' if model.endswith('_dct') else 'pixel'
  gap = networks.uses_gap(input_kind)
  channels = 1 if input_kind == 'dct' else 3
  data = _data(batch, image_size)
  labels = data['label'].astype(np.float32)
  constants = {'dct_mean': np.zeros((image_size, image_size), np.float32),
               'dct_std': np.ones((image_size, image_size), np.float32)}
  if model in ('gandct', 'postpool'):
    module = {'gandct': networks.GanDctConv, 'postpool': networks.GanfpPostpool}[model](
        1, conv_impl=conv_impl)
    params = networks.init_variables(module, key, (1, image_size, image_size, channels))['params']
    state = base.new_state({'params': params, 'batch_stats': {}}, optimizer)
    step = jax.jit(functools.partial(baseline.baseline_train_step, model=module,
                                     input_kind=input_kind, loss_fn=losses.sigmoid_bce,
                                     optimizer=optimizer))
    infer = jax.jit(functools.partial(baseline.binary_predict_step, model=module,
                                      input_kind=input_kind))
    return (step, (state, constants, data, labels, None),
            infer, ({'params': params}, constants, data['image']))
  primary_model = networks.Primary(gap, conv_impl=conv_impl)
  primary = networks.init_variables(primary_model, key, (1, image_size, image_size, channels))
  if model.startswith('heads'):
    heads_model = networks.StackedHeads(NUM_HEADS, gap, conv_impl=conv_impl)
    variables = networks.init_variables(heads_model, key, (1, image_size // 4, image_size // 4, 16))
    constants = constants | {'primary': primary}
    bound = dict(primary_model=primary_model, heads_model=heads_model, input_kind=input_kind)
    step = jax.jit(functools.partial(proposed.heads_train_step, **bound,
                                     loss_fn=losses.sigmoid_bce, optimizer=optimizer))
    infer = jax.jit(functools.partial(proposed.heads_predict_step, **bound))
    targets = jnp.asarray(np.random.default_rng(0).integers(0, 2, (NUM_HEADS, batch)), jnp.float32)
    return (step, (base.new_state(variables, optimizer), constants, data, targets,
                   jnp.ones(NUM_HEADS, bool)),
            infer, (variables, constants, data['image']))
  step = jax.jit(functools.partial(proposed.detector_train_step, model=primary_model,
                                   input_kind=input_kind, loss_fn=losses.sigmoid_bce,
                                   optimizer=optimizer))
  infer = jax.jit(functools.partial(proposed.detector_predict_step, model=primary_model,
                                    input_kind=input_kind))
  return (step, (base.new_state(primary, optimizer), constants, data, labels, None),
          infer, (primary, constants, data['image']))


def interleaved_seconds(fns: dict, rounds: int) -> dict:
  """Median seconds per call of each already-compiled (fn, args), timed in alternating rounds."""
  samples = {name: [] for name in fns}
  for _ in range(rounds):
    for name, (fn, args) in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      samples[name].append(time.perf_counter() - start)
  return {name: sorted(s)[len(s) // 2] for name, s in samples.items()}


def keras_figures(python: str, model: str, image_size: int, batch: int) -> dict:
  flags = (['--dct'] if model.endswith('_dct') else []) + (['--head'] if model.startswith('heads') else [])
  script = pathlib.Path(__file__).with_name('keras_primary.py')
  result = subprocess.run([python, str(script), '--image-size', str(image_size), '--batch',
                           str(batch), *flags], capture_output=True, text=True, check=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--model', default='primary',
                      choices=['primary', 'primary_dct', 'heads', 'gandct', 'postpool'])
  parser.add_argument('--image-size', type=int, default=128)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--forms', default='lax,cpu')
  parser.add_argument('--rounds', type=int, default=8)
  parser.add_argument('--keras-python', help='interpreter with TensorFlow for the Keras figure')
  parser.add_argument('--json')
  args = parser.parse_args()
  forms = args.forms.split(',')
  built = {form: build(args.model, args.image_size, args.batch,
                       'onednn' if form == 'onednn_unfused' else form) for form in forms}
  train_fns, infer_fns = {}, {}
  for form, (step, step_args, infer, infer_args) in built.items():
    with networks.layer_fusion(form != 'onednn_unfused'):
      train_fns[form] = (step.lower(*step_args).compile(), step_args)
      infer_fns[form] = (infer.lower(*infer_args).compile(), infer_args)
  if args.model == 'primary_dct':
    # The inference step includes the images' log-DCT (uint8 in); Keras's DCT model is given the
    # DCT input. Timed alone too, so that the model's share can be compared with Keras's.
    _, _, _, infer_args = built[forms[0]]
    dct = jax.jit(lambda images, constants: base.preprocess(images, 'dct', constants))
    dct_args = (infer_args[2], infer_args[1])
    infer_fns['dct_preprocessing'] = (dct.lower(*dct_args).compile(), dct_args)
  flops = common.flops_of(built[forms[0]][0], *built[forms[0]][1])
  peak = common.matmul_peak_gflops()
  for fns in (train_fns, infer_fns):  # warm-up
    interleaved_seconds(fns, 1)
  train_s = interleaved_seconds(train_fns, args.rounds)
  infer_s = interleaved_seconds(infer_fns, args.rounds)
  record = {'model': args.model, 'image_size': args.image_size, 'batch': args.batch,
            'gflop_per_train_step': flops / 1e9 if flops else None,
            'matmul_peak_gflops': peak, 'forms': {}}
  for form in forms:
    achieved = flops / train_s[form] / 1e9 if flops else None
    record['forms'][form] = {
        'train_images_per_sec': args.batch / train_s[form],
        'inference_images_per_sec': args.batch / infer_s[form],
        'train_achieved_gflops': achieved,
        'train_fraction_of_peak': achieved / peak if achieved else None}
  if 'dct_preprocessing' in infer_s:
    pre = infer_s['dct_preprocessing']
    record['dct_preprocessing_images_per_sec'] = args.batch / pre
    for form in forms:
      record['forms'][form]['inference_model_only_images_per_sec'] = (
          args.batch / (infer_s[form] - pre))
  if {'lax', 'cpu'} <= set(forms):
    record['cpu_vs_lax'] = {kind: train_s['lax'] / train_s['cpu'] if kind == 'train'
                            else infer_s['lax'] / infer_s['cpu'] for kind in ('train', 'inference')}
  if args.keras_python and args.model in ('primary', 'primary_dct', 'heads'):
    keras = keras_figures(args.keras_python, args.model, args.image_size, args.batch)
    keras_train, keras_infer = keras['train_images_per_sec'], keras['inference_images_per_sec']
    if args.model == 'heads':
      # The release trains and runs one secondary model per head: K of its steps per batch
      # (its primary pass at inference is left out, in Keras's favour).
      keras_train, keras_infer = keras_train / NUM_HEADS, keras_infer / NUM_HEADS
      keras['train_images_per_sec_all_heads'] = keras_train
      keras['inference_images_per_sec_all_heads'] = keras_infer
    record['keras'] = keras
    record['vs_keras'] = {form: {
        'train': record['forms'][form]['train_images_per_sec'] / keras_train,
        'inference': record['forms'][form]['inference_images_per_sec'] / keras_infer}
        for form in forms}
    for form in forms:
      if 'inference_model_only_images_per_sec' in record['forms'][form]:
        record['vs_keras'][form]['inference_model_only'] = (
            record['forms'][form]['inference_model_only_images_per_sec'] / keras_infer)
  record['machine'] = common.machine()
  common.write_json(args.json, record)


if __name__ == '__main__':
  main()
