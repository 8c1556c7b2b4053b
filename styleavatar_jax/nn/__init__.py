"""Small Flax layers and ops: equalized-lr dense/conv, modulated conv, FIR resampling."""
