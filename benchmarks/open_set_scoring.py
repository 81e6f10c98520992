"""What attribute's default open-set verdict (`--open-set knn`) adds to scoring a batch.

python benchmarks/open_set_scoring.py [--batch 32 --image-size 128 --bank 2400] [--json out.json]

Side by side in one process, on a randomly initialised 4-head pixel model (time does not depend
on the weights' values): `inference.score_batch` without pooled features (what `--open-set
tpr95|doc|off` runs), with them (the jitted program `--open-set knn` runs), and the host-side
kNN distance of the batch to a bank of that many known training features. Printed as seconds
per batch (and the kNN distance alone) and the ratio of the kNN path to the heads-only one.
"""
import argparse

import jax
import numpy as np

import common  # benchmarks/common.py
from gta_jax.models import networks
from gta_jax.scoring import inference
from gta_jax.scoring import openset as openset_scores


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--image-size', type=int, default=128)
  parser.add_argument('--bank', type=int, default=2400, help='known training images in the bank '
                      '(the built-in data: 2,400)')
  parser.add_argument('--json')
  args = parser.parse_args()
  key = jax.random.key(0)
  num_heads, size = 4, args.image_size
  variables = {'primary': networks.init_variables(networks.Primary(True), key, (1, size, size, 3)),
               'heads': networks.init_variables(networks.StackedHeads(num_heads, True), key,
                                              (1, size // 4, size // 4, 16))}
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (args.batch, size, size, 3)).astype(np.float32)
  width = networks.pooled_feature_width(num_heads)
  knn = openset_scores.NearestNeighbours(rng.normal(size=(args.bank, width)).astype(np.float32))

  def heads_only():
    return inference.score_batch(variables, x, input_kind='pixel', num_heads=num_heads,
                                 with_saliency=False)[:2]

  def with_features():
    return inference.score_batch(variables, x, input_kind='pixel', num_heads=num_heads,
                                 with_saliency=False, with_features=True)

  def knn_path():  # what _score_bucket does per batch under --open-set knn
    features = jax.device_get(with_features()[3])
    return knn(features)

  def knn_alone():
    return knn(features)

  features = jax.device_get(with_features()[3])
  # Interleaved rounds, each path timed the same way (common.time_fn), so that a load change on
  # the machine hits every variant alike.
  paths = {'heads_only': heads_only, 'with_features': with_features, 'knn_path': knn_path,
           'knn_alone': knn_alone}
  rounds = {name: [] for name in paths}
  for _ in range(3):
    for name, fn in paths.items():
      rounds[name].append(common.time_fn(fn))
  seconds = {name: float(np.median(values)) for name, values in rounds.items()}
  common.write_json(args.json, {
      'batch': args.batch, 'image_size': size, 'heads': num_heads, 'bank': args.bank,
      'seconds_per_batch': seconds,
      'ratio_with_features_to_heads_only': seconds['with_features'] / seconds['heads_only'],
      'ratio_knn_path_to_heads_only': seconds['knn_path'] / seconds['heads_only'],
      'machine': common.machine()})


if __name__ == '__main__':
  main()
