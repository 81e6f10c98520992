"""Baseline gandct-conv (Frank et al.'s simple CNN), trained from scratch on GANFP.

python launch.py --config=configs/baseline_gandct.py              (detection)
python launch.py --config=configs/baseline_gandct.py:progan       (one-vs-rest ProGAN)
python launch.py --config=configs/baseline_gandct.py:multiclass   (real + 4 GANs, softmax)
python launch.py --config=configs/baseline_gandct.py:multi        (detection retrained on multi-augmented
                                                                 images from the clean run, phase II)
"""
from configs import baselines


def get_config(arg: str = ''):
  return baselines.baseline_config('gandct', arg, seed=2021)
