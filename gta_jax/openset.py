"""`python -m gta_jax.openset`: an alias of gta_jax/tools/openset.py (the console script gta-openset)."""
import sys

from gta_jax.tools.openset import main

if __name__ == '__main__':
  sys.exit(main())
