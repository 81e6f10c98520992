"""The authors' Keras primary network, timed the same way as benchmarks/train_step.py.

Runs only where TensorFlow is installed (a benchmark-only venv: `pip install tensorflow-cpu`;
TensorFlow is not a dependency of gta_jax). benchmarks/train_step.py --keras-python PY runs this
script in that interpreter so both figures come from one invocation on the same machine.

python benchmarks/keras_primary.py --image-size 128 --batch 64 [--dct | --head]
Prints one JSON line: train and inference images/s. --head times the release's secondary model
(the primary's first two blocks frozen, BatchNorm in inference mode, plus one trainable head):
the release trains one such model per generator, so K heads cost K of these steps.
--profile-steps N (with ONEDNN_VERBOSE=1; benchmarks/profile_step.py --keras-python runs it)
prints oneDNN's per-primitive lines of N steps between PROFILE_START and PROFILE_STOP instead.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

keras = tf.keras


def build_primary(image_size: int, channels: int, gap: bool):
  """The release's model_config, layer by layer (ORIGINAL_CODE_NOTES.md, 'Primary network')."""
  init = lambda: keras.initializers.RandomNormal(stddev=0.02)  # one instance per layer
  inputs = keras.Input((image_size, image_size, channels))
  h = keras.layers.Conv2D(3, 3, padding='same', activation='relu', kernel_initializer=init())(inputs)
  for features, kernel, stride in [(8, 4, 2), (16, 3, 1), (16, 4, 2), (32, 3, 1), (32, 4, 2)]:
    h = keras.layers.Conv2D(features, kernel, strides=stride, padding='same',
                            kernel_initializer=init())(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Activation('relu')(h)
  h = keras.layers.GlobalAveragePooling2D()(h) if gap else keras.layers.Flatten()(h)
  outputs = keras.layers.Dense(1, activation='sigmoid', kernel_initializer=init())(h)
  return keras.Model(inputs, outputs)


def build_secondary(image_size: int, channels: int, gap: bool):
  """Frozen primary conv blocks 1-4 (Keras trainable=False: BN uses its moving statistics)."""
  primary = build_primary(image_size, channels, gap)
  mid = primary.layers[10].output  # ReLU after conv 4 (input, conv1, conv2/bn/relu, conv3/bn/relu, conv4/bn/relu)
  for layer in primary.layers[:11]:
    layer.trainable = False
  init = lambda: keras.initializers.RandomNormal(stddev=0.02)  # one instance per layer
  h = mid
  for kernel, stride in [(3, 1), (4, 2)]:
    h = keras.layers.Conv2D(32, kernel, strides=stride, padding='same', kernel_initializer=init())(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Activation('relu')(h)
  h = keras.layers.GlobalAveragePooling2D()(h) if gap else keras.layers.Flatten()(h)
  outputs = keras.layers.Dense(1, activation='sigmoid', kernel_initializer=init())(h)
  return keras.Model(primary.input, outputs)


def median_seconds(fn, repeats: int = 5, min_seconds: float = 2.0) -> float:
  """common.time_fn's rule; that module imports JAX, which the TensorFlow venv lacks."""
  fn()
  samples, start = [], time.perf_counter()
  while len(samples) < repeats or time.perf_counter() - start < min_seconds:
    t = time.perf_counter()
    fn()
    samples.append(time.perf_counter() - t)
    if len(samples) >= 50:
      break
  samples.sort()
  return samples[len(samples) // 2]


def profile(fn, steps: int) -> None:
  """Warm up, then `steps` calls between two marker lines on stdout (oneDNN's verbose lines go to
  the C stdout, so both are flushed around each marker), then one JSON line: ms per step."""
  import ctypes
  libc = ctypes.CDLL(None)
  for _ in range(3):
    fn()
  def mark(text):
    libc.fflush(None)
    sys.stdout.flush()
    print(text, flush=True)
    libc.fflush(None)
  mark('PROFILE_START')
  start = time.perf_counter()
  for _ in range(steps):
    fn()
  elapsed = time.perf_counter() - start
  mark('PROFILE_STOP')
  print(json.dumps({'step_ms': 1000 * elapsed / steps}), flush=True)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--image-size', type=int, default=128)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--dct', action='store_true', help='1-channel input, Flatten head')
  parser.add_argument('--head', action='store_true', help='one secondary head on frozen blocks')
  parser.add_argument('--profile-steps', type=int, default=0,
                      help='instead: run this many steps between PROFILE_START/STOP lines '
                           '(for ONEDNN_VERBOSE=1; benchmarks/profile_step.py)')
  parser.add_argument('--profile-inference', action='store_true')
  args = parser.parse_args()
  channels = 1 if args.dct else 3
  build = build_secondary if args.head else build_primary
  model = build(args.image_size, channels, gap=not args.dct)
  optimizer = keras.optimizers.Adam(1e-3, 0.9, 0.999, 1e-7)
  loss_fn = keras.losses.BinaryCrossentropy()
  rng = np.random.default_rng(0)
  x = tf.constant(rng.uniform(-1, 1, (args.batch, args.image_size, args.image_size, channels)),
                  tf.float32)
  y = tf.constant(np.arange(args.batch) % 2, tf.float32)[:, None]

  @tf.function
  def train_step(x, y):
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  @tf.function
  def predict_step(x):
    return model(x, training=False)

  if args.profile_steps:
    return profile(lambda: (predict_step(x) if args.profile_inference else train_step(x, y)).numpy(),
                   args.profile_steps)
  train_s = median_seconds(lambda: train_step(x, y).numpy())
  infer_s = median_seconds(lambda: predict_step(x).numpy())
  keras_version = getattr(keras, '__version__', tf.__version__)
  print(json.dumps({'framework': f'tensorflow {tf.__version__} (keras {keras_version})',
                    'model': ('secondary_head' if args.head else 'primary') + ('_dct' if args.dct else ''),
                    'trainable_parameters': int(sum(np.prod(v.shape) for v in model.trainable_variables)),
                    'image_size': args.image_size, 'batch': args.batch,
                    'train_images_per_sec': args.batch / train_s,
                    'inference_images_per_sec': args.batch / infer_s,
                    'onednn': os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default')}))


if __name__ == '__main__':
  main()
