"""`python -m gta_jax.model`: an alias of gta_jax/tools/model.py (the console script gta-model)."""
import sys

from gta_jax.tools.model import main

if __name__ == '__main__':
  sys.exit(main())
