"""Dropout that takes two keep/drop decisions from each random 32-bit word.

``nn.Dropout`` draws one Threefry word per element; here each word's two 16-bit halves decide two
elements, so the drop probability is ``rate`` rounded to a multiple of 1/65536 (0.1 → 0.100006).
Otherwise as flax's: kept values scaled by ``1 / (1 - rate)``, drawn from the ``'dropout'`` rng,
nothing when ``deterministic``; masks differ from ``nn.Dropout``'s. The words are
``jax.random.bits(key, (n,), uint32)`` bit for bit, with the Threefry rounds unrolled
(``threefry_words``) so XLA:CPU fuses the hash into the select instead of running JAX's loop.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

LEVELS = 2 ** 16
ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))  # Threefry-2x32, 20 rounds (Salmon et al., 2011)


def threefry_words(key: jax.Array, n: int) -> jax.Array:
    """``jax.random.bits(key, (n,), jnp.uint32)`` with the Threefry rounds unrolled.

    Falls back to ``jax.random.bits`` where the two could differ: a key of another PRNG
    implementation, ``jax_threefry_partitionable`` off, or ``n`` ≥ 2³²."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if str(jax.random.key_impl(key)) != "threefry2x32":
            return jax.random.bits(key, (n,), jnp.uint32)
        key = jax.random.key_data(key)
    if not jax.config.jax_threefry_partitionable or n >= 2 ** 32 or key.shape != (2,):
        return jax.random.bits(key, (n,), jnp.uint32)
    k0, k1 = key[0], key[1]
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    hi, lo = ks[0], lax.iota(jnp.uint32, n) + ks[1]  # counter i: high word 0, low word i
    for i in range(5):
        for r in ROTATIONS[i % 2]:
            hi = hi + lo
            lo = ((lo << np.uint32(r)) | (lo >> np.uint32(32 - r))) ^ hi
        hi, lo = hi + ks[(i + 1) % 3], lo + ks[(i + 2) % 3] + np.uint32(i + 1)
    return hi ^ lo


class Dropout(nn.Module):
    """``nn.Dropout``'s ``rate`` and ``deterministic``, with the mask described above."""

    rate: float
    deterministic: Optional[bool] = None

    @nn.compact
    def __call__(self, x, deterministic: Optional[bool] = None):
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"dropout rate {self.rate!r} must be in [0, 1)")
        if nn.merge_param("deterministic", self.deterministic, deterministic) or self.rate == 0.0:
            return x
        words = threefry_words(self.make_rng("dropout"), (x.size + 1) // 2)
        halves = lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)[: x.size].reshape(x.shape)
        keep = halves >= min(round(self.rate * LEVELS), LEVELS - 1)
        return jnp.where(keep, x / (1.0 - self.rate), 0).astype(x.dtype)
