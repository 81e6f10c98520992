"""gta_jax: GAN-image detection and source attribution (Khoo, Lim & Phan 2022) in JAX/Flax."""
from gta_jax import host_memory as _host_memory
from gta_jax import xla_flags as _xla_flags

_xla_flags.apply()  # before any backend starts: see gta_jax/xla_flags.py
_host_memory.apply()  # XLA's per-step buffers reused, not mapped afresh: gta_jax/host_memory.py
