"""`python -m gta_jax.sweep`: an alias of gta_jax/tools/sweep.py (the console script gta-sweep)."""
from gta_jax.tools.sweep import run

if __name__ == '__main__':
  run()
