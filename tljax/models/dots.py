"""``x @ kernel`` with a backward pass that XLA:CPU runs without transposing activations.

Autodiff writes the kernel gradient of ``y = x @ w`` as ``xᵀ·dy``; XLA:CPU (jax 0.10) lays that
product out by transposing ``dy`` (an activation-sized copy, fused into whatever produced
``dy``, e.g. BatchNorm's backward) — 950 ms of a 5.1 s ResNet-50 step. Computing
``(dyᵀ·x)ᵀ`` instead transposes only the small ``(out, in)`` result. Same values (the sum is
reordered), same parameters. ResNet's 1×1 convolutions use it; BERT's Dense layers do not:
there YNNPACK's own kernel-gradient dot is faster (MiniLM step 1.21 → 1.37 s with this one).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


@jax.custom_vjp
def dense_dot(x, kernel):
    """``x``: ``(..., in)``, ``kernel``: ``(in, out)`` → ``(..., out)``."""
    return jnp.einsum("...c,cd->...d", x, kernel)


def _forward(x, kernel):
    return dense_dot(x, kernel), (x, kernel)


def _backward(saved, dy):
    x, kernel = saved
    dx = jnp.einsum("...d,cd->...c", dy, kernel).astype(x.dtype)
    flat_dy, flat_x = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])
    dkernel_t = lax.dot_general(flat_dy, flat_x, (((0,), (0,)), ((), ())))  # (out, in): no big transpose
    return dx, dkernel_t.T.astype(kernel.dtype)


dense_dot.defvjp(_forward, _backward)
