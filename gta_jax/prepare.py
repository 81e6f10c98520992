"""`python -m gta_jax.prepare`: an alias of gta_jax/tools/prepare.py (the console script gta-prepare)."""
import sys

from gta_jax.tools.prepare import main

if __name__ == '__main__':
  sys.exit(main())
