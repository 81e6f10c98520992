"""`python -m gta_jax.attribute`: an alias of gta_jax/tools/attribute.py (the console script gta-attribute)."""
import sys

from gta_jax.tools.attribute import main

if __name__ == '__main__':
  sys.exit(main())
