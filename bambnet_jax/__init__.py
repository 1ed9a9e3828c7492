"""bambnet-jax: BaMBNet dual-pixel defocus deblurring in JAX/Flax."""

__version__ = "0.1.0"
