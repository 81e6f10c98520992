"""Peak memory and time of `python -m gta_jax.attribute` on folders of large and mixed photos.

python benchmarks/attribute_memory.py [--json out.json] [--other-repo PATH]

Each scenario runs the command in its own process and reads that process's peak resident memory
(wait4's ru_maxrss). --other-repo runs the same scenarios with another checkout's attribute
(e.g. a worktree of an older commit) in the same invocation, for side-by-side ratios. The model is
a randomly initialised 128-px pixel detector with 4 heads: memory and time do not depend on the
weights' values.
"""
import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from PIL import Image

import common  # benchmarks/common.py
from gta_jax.io import checkpoints
from gta_jax.io import outputs
from gta_jax.models import networks

REPO = pathlib.Path(__file__).resolve().parents[1]


def write_model(directory: pathlib.Path) -> pathlib.Path:
  key = jax.random.key(0)
  variables = {'primary': networks.init_variables(networks.Primary(True), key, (1, 128, 128, 3)),
               'heads': networks.init_variables(networks.StackedHeads(4, True), key, (1, 32, 32, 16))}
  spec = checkpoints.ModelSpec(input_kind='pixel', image_size=128,
                               head_names=('a', 'b', 'c', 'd'), source='random')
  checkpoints.save_model_bundle(directory / 'model', spec, jax.device_get(variables))
  return directory / 'model'


def photo(rng, height: int, width: int) -> Image.Image:
  """A camera-like image: smooth content plus noise (JPEG-compresses like a photo)."""
  low = rng.integers(0, 256, (height // 64 + 2, width // 64 + 2, 3), dtype=np.uint8)
  base = np.asarray(Image.fromarray(low).resize((width, height), Image.BILINEAR), np.int16)
  noisy = base + rng.integers(-12, 13, base.shape, dtype=np.int16)
  return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def scenarios(directory: pathlib.Path) -> dict:
  """-> {description: folder}, each folder written with its images."""
  rng = np.random.default_rng(0)
  cases = {  # description: (folder, [(file name, height, width)]); a zero-size name = all zeros
      '6 photos 4032x3024 (12.2 MP) JPEG': (
          'phone_photos', [(f'{i:02d}.jpg', 3024, 4032) for i in range(6)]),
      '1 image 4096x4096 (the default limit)': ('at_limit', [('limit.png', 4096, 4096)]),
      '1 PNG 8192x4096 of zeros (refused: over the limit)': (
          'over_limit', [('zeros.png', 4096, 8192)]),
      '256 images 512x512': ('many_512', [(f'{i:03d}.png', 512, 512) for i in range(256)]),
      '24 images, 24 sizes 256-509 px': (
          'mixed_sizes', [(f'{i:02d}.png', 256 + 11 * i, 320 - 7 * i) for i in range(24)]),
      '24 images, one size 384 px': ('one_size', [(f'{i:02d}.png', 384, 384) for i in range(24)]),
  }
  made = {}
  for description, (name, files) in cases.items():
    folder = directory / name
    folder.mkdir()
    for file_name, height, width in files:
      image = (Image.new('RGB', (width, height)) if name == 'over_limit'
               else photo(rng, height, width))
      image.save(folder / file_name, **({'quality': 92} if file_name.endswith('.jpg') else {}))
    made[description] = folder
  return made


def run_attribute(repo: pathlib.Path, model: pathlib.Path, folder: pathlib.Path) -> dict:
  out = folder.parent / f'{folder.name}.json'
  command = [sys.executable, '-m', 'gta_jax.attribute', '--model', str(model), '--json', str(out),
             str(folder)]
  env = dict(os.environ, PYTHONPATH=str(repo))
  start = time.perf_counter()
  process = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
  _, status, usage = os.wait4(process.pid, 0)
  seconds = time.perf_counter() - start
  stderr = process.stderr.read().decode(errors='replace')
  code = os.waitstatus_to_exitcode(status)
  record = {'exit': code, 'seconds': round(seconds, 1),
            'peak_rss_mb': round(usage.ru_maxrss / 1024), 'scored': None}
  if code in (0, 1) and out.exists():
    records = outputs.load(out)  # this checkout's marked records, or an older one's bare list
    record['scored'] = sum(r['error'] is None for r in records)
    out.unlink()
  elif stderr:
    record['stderr_tail'] = stderr[-300:]
  return record


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--json')
  parser.add_argument('--other-repo', help='another checkout to run side by side (e.g. old commit)')
  args = parser.parse_args()
  result = {'machine': common.machine(), 'scenarios': {}}
  with tempfile.TemporaryDirectory() as tmp:
    directory = pathlib.Path(tmp)
    model = write_model(directory)
    for name, folder in scenarios(directory).items():
      row = {'this': run_attribute(REPO, model, folder)}
      if args.other_repo:
        row['other'] = run_attribute(pathlib.Path(args.other_repo), model, folder)
        if row['other']['peak_rss_mb']:
          row['memory_ratio_other_over_this'] = round(
              row['other']['peak_rss_mb'] / row['this']['peak_rss_mb'], 2)
      result['scenarios'][name] = row
      print(name, row, flush=True)
  common.write_json(args.json, result)


if __name__ == '__main__':
  main()
