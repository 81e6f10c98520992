"""`python -m gta_jax.verify`: an alias of gta_jax/tools/verify.py (the console script gta-verify)."""
import sys

from gta_jax.tools.verify import main

if __name__ == '__main__':
  sys.exit(main())
