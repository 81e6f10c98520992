"""The default job: phases I-IV plus evaluation on the built-in synthetic_fingerprints dataset.

python launch.py --config=configs/quickstart.py        (generates the dataset on first use)
python launch.py --config=configs/quickstart.py:smoke  (seconds; what the tests run)
"""
from configs import common


def get_config(arg: str = ''):
  config = common.get_config()
  config.name = 'quickstart'
  config.chain = ('configs/phase1_synthetic.py', 'configs/phase2_synthetic.py',
                  'configs/phase3_synthetic.py', 'configs/phase4_synthetic.py')
  return common.variant(config, arg)
