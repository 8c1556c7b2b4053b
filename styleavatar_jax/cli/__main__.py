"""`python -m styleavatar_jax.cli ...`: the same entry point as `styleavatar-jax`."""

import sys

from styleavatar_jax.cli import main

sys.exit(main())
