"""`python -m gta_jax.evaluate`: an alias of gta_jax/tools/evaluate.py (the console script gta-evaluate)."""
import sys

from gta_jax.tools.evaluate import main

if __name__ == '__main__':
  sys.exit(main())
