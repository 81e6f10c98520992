"""Phase IV on the built-in data: the phase-III heads retrained on augmented images (`one`: at most
one of blur / crop / JPEG / noise per image, as phase II; `--config.data.train_mode=multi` is the
paper's stacked perturbations).

python launch.py --config=configs/phase4_synthetic.py   (on runs/phase3_synthetic, beside its workdir)
"""
from configs import common


def get_config(arg: str = ''):
  return common.heads_phase(arg, dataset='synthetic', phase=4, sources=common.SYNTHETIC_SOURCES)
