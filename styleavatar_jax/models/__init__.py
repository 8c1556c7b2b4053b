"""Flax models: mapping, synthesis, super-resolution, tri-plane generator, discriminator."""
