"""`python -m gta_jax.report`: an alias of gta_jax/tools/report.py (the console script gta-report)."""
import sys

from gta_jax.tools.report import main

if __name__ == '__main__':
  sys.exit(main())
