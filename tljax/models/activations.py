"""GELU as PyTorch and Hugging Face write it, ``x · (1 + erf(x / √2)) / 2``: BERT's and ViT's
exact GELU (``jax.nn.gelu(approximate=False)`` is the same function written with ``erfc``).
"""

from __future__ import annotations

import numpy as np
from jax import lax

SQRT_HALF = np.float32(np.sqrt(0.5))


def gelu(x):
    """Exact (erf) GELU."""
    return 0.5 * x * (1.0 + lax.erf(x * SQRT_HALF.astype(x.dtype)))
