"""3×3 stride-1 convolutions by Winograd's F(2×2, 3×3) on XLA:CPU, where that is faster.

Each 2×2 output tile of a 3×3 convolution is ``Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A`` for its 4×4 input tile
``d`` (Lavin & Gray, 2015): 16 products per tile instead of 36. Over channels the 16 element-wise
products become 16 matrix products ``V_p · U_p`` (tiles × in by in × out), which XLA:CPU runs as
one batched dot; the tile transforms are additions that XLA fuses into one pass each way. The
input gradient is the same convolution of ``dy`` with the flipped, transposed kernel, so it is
computed the same way; the kernel gradient stays XLA's own (Winograd's was not faster).

Measured alone (batch 16, forward, ms, XLA's convolution → this): 128 channels at 28²: 19.1 → 15.8;
256 at 14²: 18.1 → 11.4; at 56² (64 channels) the transforms' memory traffic cancels the gain
(21.3 → 20.6) and at 7² the padded tiles make it slower (18.3 → 34.6), so only even sizes from 12
to 32 use it; in ResNet-50's train step it made 56² slower. It differs from XLA's convolution by
≈ 1e-6 of the largest output, as much as XLA's default differs from its highest precision.
float32 only: bfloat16 transforms would round where a direct convolution accumulates in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tljax.models.dots import on_xla_cpu

DIMENSIONS = ("NHWC", "HWIO", "NHWC")
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
# G applied to a kernel flipped in space (G·J·g) is G with rows 0 and 3 swapped applied to the kernel
# (P·G·g): the input gradient's transformed kernel is the forward's with its 16 positions permuted.
FLIPPED = np.array([3, 1, 2, 0])
FLIP_POSITIONS = (FLIPPED[:, None] * 4 + FLIPPED[None, :]).reshape(-1)


def applies(x, kernel, strides: int) -> bool:
    """Whether ``conv3x3`` takes the Winograd route for this call (see the module docstring)."""
    h, w = x.shape[1:3]
    return (on_xla_cpu() and strides == 1 and kernel.shape[:2] == (3, 3) and x.dtype == jnp.float32
            and kernel.dtype == jnp.float32 and all(s % 2 == 0 and 12 <= s <= 32 for s in (h, w)))


def conv3x3(x, kernel, strides: int = 1):
    """NHWC ``x``, HWIO ``kernel`` of shape ``(3, 3, in, out)``, padding 1, as ``nn.Conv`` computes."""
    return _winograd_conv(x, kernel) if applies(x, kernel, strides) else xla_conv3x3(x, kernel, strides)


def xla_conv3x3(x, kernel, strides: int = 1):
    """XLA's own convolution: every other case, and the kernel gradient of the Winograd route."""
    return lax.conv_general_dilated(x, kernel, (strides, strides), ((1, 1), (1, 1)),
                                    dimension_numbers=DIMENSIONS)


def transform_kernel(kernel):
    """``G g Gᵀ`` for every (in, out) pair: ``(16, in, out)``."""
    u = jnp.einsum("ai,ijcd,bj->abcd", G, kernel, G, precision=lax.Precision.HIGHEST)
    return u.reshape(16, *kernel.shape[2:])


def input_tiles(x):
    """``Bᵀ d B`` of every 4×4 tile (stride 2) of ``x`` padded by 1: ``(16, tiles, channels)``."""
    h, w, c = x.shape[1:]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows = [padded[:, a:a + h:2] for a in range(4)]
    rows = [rows[0] - rows[2], rows[1] + rows[2], rows[2] - rows[1], rows[1] - rows[3]]
    tiles = []
    for r in rows:
        cols = [r[:, :, b:b + w:2] for b in range(4)]
        tiles += [cols[0] - cols[2], cols[1] + cols[2], cols[2] - cols[1], cols[1] - cols[3]]
    return jnp.stack(tiles).reshape(16, -1, c)


def output_tiles(m, shape):
    """``Aᵀ M A`` of every tile, laid back out as NHWC ``shape``."""
    n, h, w, d = shape
    m = m.reshape(4, 4, n, h // 2, w // 2, d)
    rows = [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]
    y = jnp.stack([jnp.stack([r[0] + r[1] + r[2], r[1] - r[2] - r[3]]) for r in rows])
    return y.transpose(2, 3, 0, 4, 1, 5).reshape(shape)


def _convolve(x, u, spec):
    products = jnp.einsum(spec, input_tiles(x), u)
    return output_tiles(products, x.shape[:3] + (products.shape[-1],))


@jax.custom_vjp
def _winograd_conv(x, kernel):
    return _forward(x, kernel)[0]


def _forward(x, kernel):
    u = transform_kernel(kernel)
    return _convolve(x, u, "ptc,pcd->ptd"), (x, kernel, u)


def _backward(saved, dy):
    x, kernel, u = saved
    dx = _convolve(dy, u[FLIP_POSITIONS], "ptd,pcd->ptc")
    _, kernel_vjp = jax.vjp(lambda k: xla_conv3x3(x, k), kernel)
    return dx, kernel_vjp(dy)[0]


_winograd_conv.defvjp(_forward, _backward)
