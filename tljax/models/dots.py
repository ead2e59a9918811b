"""``x @ kernel`` with a backward pass that XLA:CPU runs without transposing activations.

Autodiff writes the kernel gradient of ``y = x @ w`` as ``xᵀ·dy``; XLA:CPU (jax 0.10) lays that
product out by transposing ``dy`` (an activation-sized copy, fused into whatever produced
``dy``, e.g. BatchNorm's backward) — 950 ms of a 5.1 s ResNet-50 step. The backward here
contracts both over their rows (``kernel_gradient``), so at most the small ``(in, out)`` result
is transposed. Same values (the sum is reordered), same parameters. ResNet's 1×1 convolutions
and the transformers' ``Dense`` layers use it on CPU (MiniLM train step −117 and −152 ms of
≈ 950–1,040 ms, ViT-B/16 −90 of 4,830 ms, interleaved A/B runs in one process).
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

    XLA:CPU runs this product on Eigen, which is up to 1.5× faster when the wider of ``in`` and
    ``out`` is the result's minor (last) axis: for ``in > out`` it computes ``(dyᵀ·x)`` and
    transposes that small result, behind a barrier so XLA does not fold the transpose back.
    Alone, 50,176 rows × 256 in × 64 out: 20.4 → 13.9 ms; 12,544 × 512 × 128: 17.2 → 11.8 ms;
    the other way round (``in < out``) the plain form is the faster one."""
    rows = (((0,), (0,)), ((), ()))
    if x.shape[1] > dy.shape[1]:
        return lax.optimization_barrier(lax.dot_general(dy, x, rows)).T
    return lax.dot_general(x, dy, rows)


def on_xla_cpu() -> bool:
    """Whether the forms below apply: they are XLA:CPU's fixes; other backends get the plain ops
    (GPU runs were measured with those, and XLA:GPU in jaxlib 0.11.2 aborts compiling a strided
    slice reshaped into a dot inside a Triton fusion)."""
    return jax.default_backend() == "cpu"


def dense_dot_general(x, kernel, dimension_numbers, precision=None, preferred_element_type=None):
    """For ``nn.Dense(dot_general=...)``: ``dense_dot`` for Dense's own contraction, on CPU."""
    plain = dimension_numbers != (((x.ndim - 1,), (0,)), ((), ())) or precision is not None
    if plain or not on_xla_cpu():
        return lax.dot_general(x, kernel, dimension_numbers, precision, preferred_element_type=preferred_element_type)
    return dense_dot(x, kernel)


def conv1x1(x, kernel, strides: int = 1):
    """NHWC ``x``, HWIO ``kernel`` of shape ``(1, 1, in, out)``: one ``dense_dot`` on CPU (2–3× faster
    than XLA:CPU's convolution), a convolution elsewhere."""
    if not on_xla_cpu():
        return lax.conv_general_dilated(x, kernel, (strides, strides), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return dense_dot(x[:, ::strides, ::strides, :] if strides > 1 else x, kernel[0, 0])


dense_dot.defvjp(_forward, _backward)

Dense = functools.partial(nn.Dense, dot_general=dense_dot_general)  # same parameters as nn.Dense
