"""3×3 stride-1 convolutions (padding 1) by Winograd's F(2×2, 3×3): 16 products per 2×2 output tile
instead of 36 (Lavin & Gray, 2015), as 16 dots over channels. Applies to float32 maps of 12 to 56 per
side (the sizes where it was faster on XLA:CPU); the input gradient is computed the same way, the
kernel gradient and every other call are XLA's own convolution. Within ≈ 1e-6 of the largest output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

DIMENSIONS = ("NHWC", "HWIO", "NHWC")
MIN_SIZE, MAX_SIZE = 12, 56  # spatial sizes that take the Winograd route (PERFORMANCE.md)
# G applied to a kernel flipped in space (G·J·g) is G with rows 0 and 3 swapped applied to the kernel
# (P·G·g): the input gradient's transformed kernel is the forward's with its 16 positions permuted.
FLIPPED = np.array([3, 1, 2, 0])
FLIP_POSITIONS = (FLIPPED[:, None] * 4 + FLIPPED[None, :]).reshape(-1)


def applies(x, kernel, strides: int) -> bool:
    """Whether ``conv3x3`` takes the Winograd route for this call: float32, stride 1, 12–56 per side
    (odd sizes padded by one zero row or column); bfloat16 transforms would round where a direct
    convolution accumulates in float32."""
    h, w = x.shape[1:3]
    return (strides == 1 and kernel.shape[:2] == (3, 3) and x.dtype == jnp.float32
            and kernel.dtype == jnp.float32 and all(MIN_SIZE <= s <= MAX_SIZE for s in (h, w)))


def conv3x3(x, kernel, strides: int = 1):
    """NHWC ``x``, HWIO ``kernel`` of shape ``(3, 3, in, out)``, padding 1, as ``nn.Conv`` computes."""
    if not applies(x, kernel, strides):
        return xla_conv3x3(x, kernel, strides)
    h, w = x.shape[1:3]
    if h % 2 or w % 2:  # tiles cover an even size: one more zero row or column, cropped after
        return _winograd_conv(jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))), kernel)[:, :h, :w]
    return _winograd_conv(x, kernel)


def xla_conv3x3(x, kernel, strides: int = 1):
    """XLA's own convolution: every other case, and the kernel gradient of the Winograd route."""
    return lax.conv_general_dilated(x, kernel, (strides, strides), ((1, 1), (1, 1)),
                                    dimension_numbers=DIMENSIONS)


def _g_rows(r):
    """``G`` applied along one axis of three slices ``r``: four slices."""
    return [r[0], 0.5 * (r[0] + r[1] + r[2]), 0.5 * (r[0] - r[1] + r[2]), r[2]]


def _bt_rows(r):
    """``Bᵀ`` applied along one axis of four slices ``r``: four slices."""
    return [r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]]


def _at_rows(r):
    """``Aᵀ`` applied along one axis of four slices ``r``: two slices."""
    return [r[0] + r[1] + r[2], r[1] - r[2] - r[3]]


def transform_kernel(kernel):
    """``G g Gᵀ`` for every (in, out) pair: 16 arrays ``(in, out)``, position ``4a + b``.

    Written as additions of kernel slices, which XLA fuses into one pass (an einsum with ``G`` was
    two dots with a contraction of 3 and a transpose)."""
    along_h = [_g_rows([kernel[i, j] for i in range(3)]) for j in range(3)]  # [j][a]
    return [t for a in range(4) for t in _g_rows([along_h[j][a] for j in range(3)])]


def input_tiles(x):
    """``Bᵀ d B`` of every 4×4 tile (stride 2) of ``x`` padded by 1: 16 arrays ``(tiles, channels)``.

    Kept as 16 arrays: stacked into one, XLA:CPU wrote them and then copied them into the stack."""
    h, w, c = x.shape[1:]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    tiles = []
    for r in _bt_rows([padded[:, a:a + h:2] for a in range(4)]):
        tiles += _bt_rows([r[:, :, b:b + w:2] for b in range(4)])
    return [t.reshape(-1, c) for t in tiles]


def output_tiles(m, shape):
    """``Aᵀ M A`` of every tile, from the 16 arrays ``m``, laid back out as NHWC ``shape``.

    Output pixel ``(2r + i, 2c + j)`` is tile ``(r, c)``'s ``(i, j)``: stacking the four on axes
    placed where NHWC wants them makes the result a reshape (stacked in front and transposed, the
    output was written twice)."""
    n, h, w, d = shape
    m = [t.reshape(n, h // 2, w // 2, d) for t in m]
    along_h = [_at_rows([m[4 * a + b] for a in range(4)]) for b in range(4)]  # [b][i]
    rows = [jnp.stack(_at_rows([along_h[b][i] for b in range(4)]), axis=3)  # (n, r, c, j, d)
            for i in range(2)]
    return jnp.stack(rows, axis=2).reshape(shape)  # (n, r, i, c, j, d)


def _convolve(x, u, transposed: bool):
    """The 16 products ``V_p · U_p`` (``U_pᵀ`` when ``transposed``) as 16 dots: a batched dot
    needed the stacked tiles above."""
    products = [v @ (k.T if transposed else k) for v, k in zip(input_tiles(x), u)]
    return output_tiles(products, x.shape[:3] + (products[0].shape[-1],))


@jax.custom_vjp
def _winograd_conv(x, kernel):
    return _forward(x, kernel)[0]


def _forward(x, kernel):
    u = transform_kernel(kernel)
    return _convolve(x, u, transposed=False), (x, kernel, u)


def _backward(saved, dy):
    x, kernel, u = saved
    dx = _convolve(dy, [u[p] for p in FLIP_POSITIONS], transposed=True)
    _, kernel_vjp = jax.vjp(lambda k: xla_conv3x3(x, k), kernel)
    return dx, kernel_vjp(dy)[0]


_winograd_conv.defvjp(_forward, _backward)
