"""What tests/test_distributed.py runs in a process of its own, where XLA_FLAGS can give the CPU
several devices (the flag must be set before JAX starts).

python tests/sharded_checks.py steps DATA_DIR OUT.json
  One training step of the primary and of two stacked heads, and the scores of the validation
  split, on a mesh of 1 device and of every device -> their losses, gradients, BatchNorm
  statistics and scores (numpy .npz beside OUT.json, summary in OUT.json).
python tests/sharded_checks.py process_steps DATA_DIR OUT.json HOST:PORT NUM_PROCESSES PROCESS_ID
  The same step and scores on the mesh of every device of NUM_PROCESSES processes joined by
  jax.distributed (run once per process; process 0 writes OUT.json and the .npz, under 'all').
python tests/sharded_checks.py late_collective HOST:PORT NUM_PROCESSES PROCESS_ID SECONDS
  Joins NUM_PROCESSES processes, then process 1 sleeps SECONDS before the first collective.
python tests/sharded_checks.py run DATA_DIR WORKDIR
  The phase-I smoke run of tests/test_distributed.py on 1 device and on every device.
python tests/sharded_checks.py device_batches DATA_DIR OUT.npz
  An epoch of device-path training batches (multi, widened; the split held on the devices and
  streamed) on a mesh of 1 device and of every device -> their images, labels and bits.
"""
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from ml_collections.config_flags import config_path  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from gta_jax import chains  # noqa: E402
from gta_jax import errors
from gta_jax import evaluation
from gta_jax import train
from gta_jax.data import loader
from gta_jax.evaluators import common  # noqa: E402
from gta_jax.io import checkpoints
from gta_jax.io import distributed


def smoke_config(name: str, data_dir: str, **overrides):
  """A phase's :smoke config on the smoke data, scoring only clean test images."""
  config = chains.load_config_file(str(ROOT / 'configs' / f'{name}.py'), 'smoke')
  with config.unlocked():
    config.data.data_dir = data_dir
    config.evals.test.modes = ('clean',)
    config.log_every_steps = 1
    # These checks compare device counts, whose float32 trajectories drift apart (docs/training.md,
    # scaling out). With softened reals a 30-step smoke detector scores many test images
    # near 0.5, so that drift flipped 9 of 120 verdicts; the softening draw itself depends on
    # the global position only (test_process_rows_read_the_global_order_of_one_process).
    config.data.real_softening = 0.0
    config.data.photometric_jitter = 0.0  # likewise (its draw depends on the content group only)
    for key, value in overrides.items():
      config_path.set_value(key, config, value)
  return config


def gradient_keeper() -> optax.GradientTransformation:
  """An 'optimizer' that leaves the parameters alone and keeps the step's gradients in its state:
  the real train step then hands back exactly the gradients it computed."""
  return optax.GradientTransformation(
      lambda params: {'grads': jax.tree.map(jnp.zeros_like, params)},
      lambda grads, state, params=None: (jax.tree.map(jnp.zeros_like, grads), {'grads': grads}))


def one_step(family, batch, devices):
  """-> host {'loss', 'grads', 'batch_stats'} of one train step, and the validation scores."""
  optimizer = gradient_keeper()
  with distributed.using_devices(devices):
    state = distributed.replicate(family.init_state(jax.random.key(0), optimizer))
    constants = distributed.replicate(family.constants())
    step = family.make_train_step(optimizer)
    active = distributed.replicate(np.ones(family.num_outputs, bool))
    state, metrics = step(state, constants, loader.to_device(batch),
                          loader.to_device(family.targets(batch), batch_axis=-1), active)
    result = distributed.to_host({'loss': metrics['loss'], 'grads': state.opt_state['grads'],
                                  'batch_stats': state.batch_stats})
    predict = family.make_predict_step()
    variables = distributed.replicate(jax.device_get(
        {'params': state.params, 'batch_stats': state.batch_stats}))
    scores = common.score_split(lambda images: predict(variables, constants, images),
                                family.dataset, 'validation', mode='clean', seed=0, batch_size=32)
  return result, scores


def steps(data_dir: str, out: str, meshes=None) -> None:
  """One step and the validation scores of both families on each of `meshes` ((name, devices)
  pairs; default: '1' = the first device, 'all' = every device) -> OUT's .npz, keyed
  family/mesh/leaf, and OUT (a summary). Under several processes every process computes the
  same and process 0 writes."""
  out = pathlib.Path(out)
  everything = jax.devices()
  meshes = meshes or (('1', everything[:1]), ('all', everything))
  arrays, summary = {}, {'devices': len(everything), 'processes': jax.process_count()}
  primary_config = smoke_config('phase1_synthetic', data_dir)
  dataset, primary_family = evaluation.setup(primary_config)
  # A primary bundle for the heads (random weights: what matters is that both meshes agree).
  # Every process writes it (Orbax's barriers), each to the same folder.
  bundle = out.parent / 'primary_bundle'
  variables = primary_family.init_variables(jax.random.key(1))
  checkpoints.save_model_bundle(bundle, checkpoints.ModelSpec('pixel', dataset.image_size),
                                {'primary': jax.device_get(variables)})
  distributed.wait_for_all('primary_bundle')  # model.json is process 0's to write
  heads_config = smoke_config('phase3_synthetic', data_dir, sources=('tconv', 'bilinear'),
                              **{'init.primary': str(bundle)})
  _, heads_family = evaluation.setup(heads_config)
  # This process's rows of the global batch of 16 (all of them in one process).
  batch = next(dataset.batches('train', 16, seed=1, shuffle=True, drop_remainder=True))
  for name, family in (('primary', primary_family), ('heads', heads_family)):
    for count, devices in meshes:
      result, scores = one_step(family, batch, devices)
      flat = {f'{name}/{count}/{jax.tree_util.keystr(path)}': np.asarray(leaf) for path, leaf in
              jax.tree_util.tree_flatten_with_path(result)[0]}
      flat |= {f'{name}/{count}/scores/{key}': value for key, value in scores.items()}
      arrays |= flat
  try:
    with distributed.using_devices(everything):
      distributed.check_batch_size(len(everything) * 4 + 1, 'optim.batch_size')
  except errors.ConfigError as e:
    summary['indivisible_error'] = str(e)
  if distributed.is_main_process():
    np.savez(out.with_suffix('.npz'), **arrays)
    out.write_text(json.dumps(summary))


def process_steps(data_dir: str, out: str, coordinator_address: str, num_processes: str,
                  process_id: str) -> None:
  """`steps` on the mesh of every device of every process only ('all'): the 1-device reference
  runs in a process of its own (tests/io/test_distributed.py), since one process of a
  jax.distributed run feeds only its rows of a batch and scores a split with collectives that
  every process joins."""
  distributed.initialize(coordinator_address, int(num_processes), int(process_id))
  steps(data_dir, out, meshes=(('all', jax.devices()),))


def late_collective(coordinator_address: str, num_processes: str, process_id: str,
                    seconds: str) -> None:
  """A process that reaches the run's first collective `seconds` after the others (as when
  process 0 computes DCT statistics alone) -> 'joined' on stdout."""
  distributed.initialize(coordinator_address, int(num_processes), int(process_id))
  if jax.process_index() == 1:
    time.sleep(float(seconds))
  distributed.wait_for_all('late')
  print('joined', flush=True)


def run(data_dir: str, workdir: str) -> None:
  """The smoke run on a mesh of 1 device (WORKDIR/one) and of every device (WORKDIR/all), in one
  process: XLA's CPU threading depends on the device count the process was given, so a 1-device
  run of another process differs by rounding as much as the 4-device run does."""
  for name, devices in (('one', jax.devices()[:1]), ('all', jax.devices())):
    with distributed.using_devices(devices):
      train.train_and_evaluate(smoke_config('phase1_synthetic', data_dir),
                               pathlib.Path(workdir) / name)


def device_batches(data_dir: str, out: str) -> None:
  """Device-path batches of the smoke training split on each mesh -> OUT (.npz, keyed
  mesh/holding/batch/key): each device gathers and augments its own rows."""
  from gta_jax.data import augment
  from gta_jax.data import device_path
  dataset, _ = evaluation.setup(smoke_config('phase1_synthetic', data_dir))
  arrays = {}
  for name, devices in (('1', jax.devices()[:1]), ('all', jax.devices())):
    with distributed.using_devices(devices):
      for budget, holding in ((1e9, 'held'), (0, 'streamed')):
        split = device_path.load_split(dataset.source('train'), budget)
        for i, (batch, targets) in enumerate(device_path.batches(
            split, 16, seed=1, epoch=0, mode='multi', label_view=lambda b: b['label'],
            widening=augment.Widening(0.5, 0.5), strategy='select')):
          host = distributed.to_host(batch | {'targets': targets})
          arrays |= {f'{name}/{holding}/{i}/{key}': np.asarray(value)
                     for key, value in host.items()}
  np.savez(out, **arrays)


if __name__ == '__main__':
  {'steps': steps, 'process_steps': process_steps, 'late_collective': late_collective,
   'run': run, 'device_batches': device_batches}[sys.argv[1]](*sys.argv[2:])
