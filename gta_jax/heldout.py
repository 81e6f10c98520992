"""`python -m gta_jax.heldout`: an alias of gta_jax/tools/heldout.py (the console script gta-heldout)."""
import sys

from gta_jax.tools.heldout import main

if __name__ == '__main__':
  sys.exit(main())
