"""`python -m gta_jax.keras_import`: an alias of gta_jax/tools/keras_import.py (the console script gta-keras-import)."""
import sys

from gta_jax.tools.keras_import import main

if __name__ == '__main__':
  sys.exit(main())
