"""``x @ kernel`` whose backward contracts over rows, so XLA:CPU transposes no activation.

Autodiff writes the kernel gradient of ``y = x @ w`` as ``xᵀ·dy``, which XLA:CPU lays out by
transposing the activation-sized ``dy``; here both are contracted over their rows and at most the
small ``(in, out)`` result is transposed. Same values (the sum reordered), same parameters:
``Dense`` is ``nn.Dense``, ``conv1x1`` a 1×1 ``VALID`` convolution.
"""

from __future__ import annotations

import functools

import flax.linen as nn
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
    return dx, kernel_gradient(flat_x, flat_dy).astype(kernel.dtype)


def kernel_gradient(x, dy):
    """``xᵀ·dy`` for ``x``: ``(rows, in)``, ``dy``: ``(rows, out)``, contracted over the rows.

    XLA:CPU's dot is faster when the wider of ``in`` and ``out`` is the result's minor (last) axis:
    for ``in > out`` this computes ``(dyᵀ·x)`` and transposes that small result, behind a barrier
    so XLA does not fold the transpose back."""
    rows = (((0,), (0,)), ((), ()))
    if x.shape[1] > dy.shape[1]:
        return lax.optimization_barrier(lax.dot_general(dy, x, rows)).T
    return lax.dot_general(x, dy, rows)


def dense_dot_general(x, kernel, dimension_numbers, precision=None, preferred_element_type=None):
    """For ``nn.Dense(dot_general=...)``: ``dense_dot`` for Dense's own contraction, else ``lax.dot_general``."""
    plain = dimension_numbers != (((x.ndim - 1,), (0,)), ((), ())) or precision is not None
    if plain:
        return lax.dot_general(x, kernel, dimension_numbers, precision, preferred_element_type=preferred_element_type)
    return dense_dot(x, kernel)


def conv1x1(x, kernel, strides: int = 1):
    """NHWC ``x``, HWIO ``kernel`` of shape ``(1, 1, in, out)``, ``VALID``: one ``dense_dot``.

    Not for XLA:GPU: jaxlib 0.11.2 aborted compiling the strided slice reshaped into a dot."""
    return dense_dot(x[:, ::strides, ::strides, :] if strides > 1 else x, kernel[0, 0])


dense_dot.defvjp(_forward, _backward)

Dense = functools.partial(nn.Dense, dot_general=dense_dot_general)  # same parameters as nn.Dense
