"""`python -m gta_jax.audit`: an alias of gta_jax/tools/audit.py (the console script gta-audit)."""
import sys

from gta_jax.tools.audit import main

if __name__ == '__main__':
  sys.exit(main())
