"""Baseline ganfp-postpool (Yu et al.'s classifier at 1/4 width), trained from scratch on GANFP.

python launch.py --config=configs/baseline_postpool.py[:progan|:cramergan|:multiclass][,multi]
The release recommends seed 1000 for postpool models.
"""
from configs import baselines


def get_config(arg: str = ''):
  return baselines.baseline_config('postpool', arg, seed=1000)
