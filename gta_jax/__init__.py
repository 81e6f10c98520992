"""gta_jax: GAN-image detection and source attribution (Khoo, Lim & Phan 2022) in JAX/Flax."""
from gta_jax import xla_flags as _xla_flags

_xla_flags.apply()  # before any backend starts: see gta_jax/xla_flags.py
