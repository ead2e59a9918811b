"""torchvision's stem max-pool (3×3, stride 2, padding 1) with a hand-written backward.

``nn.max_pool``'s gradient is XLA's ``select_and_scatter``, which XLA:CPU expands into index arrays.
Here the backward routes each output's gradient to the first maximum of its window (as PyTorch and
``select_and_scatter`` do) with 9 strided compares and pads that XLA fuses. The input is stored
first (``residual.store``): the compares need the very values the forward pooled, and XLA:CPU
recomputing the producer (BatchNorm, ReLU) in another fusion may round it differently. Same values
as ``nn.max_pool``; gradients up to the order in which overlapping windows' shares are summed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from tljax.models.xla_cpu.residual import store

PADDING = ((0, 0), (1, 1), (1, 1), (0, 0))


def _pool(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), PADDING)


def max_pool_3x3_s2(x):
    """``x``: NHWC → NHWC with ⌈H/2⌉ × ⌈W/2⌉ positions."""
    return _max_pool(store(x))


@jax.custom_vjp
def _max_pool(x):
    return _pool(x)


def _forward(x):
    y = _pool(x)
    return y, (x, y)


def _backward(saved, dy):
    x, y = saved
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = y.shape[1], y.shape[2]
    padded = jnp.pad(x, PADDING, constant_values=-jnp.inf)
    taken = jnp.zeros(y.shape, bool)  # windows whose maximum already got the gradient
    dx = jnp.zeros(padded.shape, x.dtype)
    for i in range(3):
        for j in range(3):
            window_entry = padded[:, i:i + 2 * out_h - 1:2, j:j + 2 * out_w - 1:2]
            first = (window_entry == y) & ~taken
            taken = taken | first
            routed = jnp.where(first, dy, 0).astype(x.dtype)
            dx = dx + lax.pad(routed, jnp.zeros((), x.dtype),  # back onto the input grid, stride 2
                              ((0, 0, 0), (i, height + 2 - i - (2 * out_h - 1), 1),
                               (j, width + 2 - j - (2 * out_w - 1), 1), (0, 0, 0)))
    return (dx[:, 1:height + 1, 1:width + 1],)


_max_pool.defvjp(_forward, _backward)
