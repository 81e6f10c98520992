"""`python -m gta_jax.crosstest`: an alias of gta_jax/tools/crosstest.py (the console script gta-crosstest)."""
import sys

from gta_jax.tools.crosstest import main

if __name__ == '__main__':
  sys.exit(main())
