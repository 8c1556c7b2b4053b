"""styleavatar_jax: StyleAvatar3D in JAX/Flax, built on an EG3D-exact tri-plane GAN."""

__version__ = "0.1.0"
