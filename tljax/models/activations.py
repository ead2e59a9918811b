"""GELU as PyTorch and Hugging Face compute it, ``x · (1 + erf(x / √2)) / 2``.

``jax.nn.gelu(approximate=False)`` writes the same function with ``erfc``, which XLA:CPU
evaluates through an exponential: forward and backward on MiniLM's (32, 64, 1536)
activations took 7.5 ms against 4.9 with ``erf`` (PyTorch's: 8.0), and the two forms differ by
under 5e-7 there.
"""

from __future__ import annotations

import numpy as np
from jax import lax

SQRT_HALF = np.float32(np.sqrt(0.5))


def gelu(x):
    """Exact (erf) GELU."""
    return 0.5 * x * (1.0 + lax.erf(x * SQRT_HALF.astype(x.dtype)))
