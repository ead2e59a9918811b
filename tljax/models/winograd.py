"""3×3 stride-1 convolutions by Winograd's F(2×2, 3×3) on XLA:CPU, where that is faster.

Each 2×2 output tile of a 3×3 convolution is ``Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A`` for its 4×4 input tile
``d`` (Lavin & Gray, 2015): 16 products per tile instead of 36. Over channels the 16 element-wise
products become 16 matrix products ``V_p · U_p`` (tiles × in by in × out); the tile transforms are
additions of slices that XLA fuses. The 16 positions stay 16 separate arrays and dots: stacked,
XLA:CPU copied the input tiles once more into the stack. The input gradient is the same convolution
of ``dy`` with the flipped, transposed kernel, so it is computed the same way; the kernel gradient
stays XLA's own: Winograd's was 4–7 ms faster alone at 28² and 14², but no faster in ResNet-50's
step (2,510 vs 2,519 ms) and 4.7e-6 of its largest value away from the exact gradient at 28².

Measured alone (batch 16, forward + both gradients, ms, XLA's convolution → this): 64 channels at
56²: 112.6 → 61.3; 128 at 28²: 59.8 → 47.0; 512 at 7²: 59.6 → 53.2. In ResNet-50's train step
(16–18 rounds in one process, rotating which variant follows PyTorch's step) 12–56 took 2,403 vs
2,443 ms with 12–32 in one run and 2,486 vs 2,470 in another. Adding 7² (padded to 8²) was faster
in one of three runs and slower in two while the output tiles were transposed into place; once they
were stacked in place (``output_tiles``) it was faster in two runs and slower in a third (2,590 vs
2,639, 2,655 vs 2,685 and 2,473 vs 2,458 ms): −21 ms on average, within the ±3 % that separate runs
move, and the digits demo's 8² convolutions, which it would also take, made that demo slower (3 min
16 s vs 2 min 41 s). So sizes from 12 to 56 use it, odd ones padded by one zero row or column. It
differs from XLA's convolution by ≈ 1e-6 of the largest output, as much as XLA's default differs
from its highest precision. float32 only: bfloat16 transforms would round where a direct
convolution accumulates in float32.
F(4×4, 3×3), with 36 products per 16 outputs, was no faster (alone on one core: 112 vs 104 ms at
56², 114 vs 74 at 14²) and 10–20× less accurate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from tljax.models.dots import on_xla_cpu

DIMENSIONS = ("NHWC", "HWIO", "NHWC")
MIN_SIZE, MAX_SIZE = 12, 56  # spatial sizes that take the Winograd route (see above)
# G applied to a kernel flipped in space (G·J·g) is G with rows 0 and 3 swapped applied to the kernel
# (P·G·g): the input gradient's transformed kernel is the forward's with its 16 positions permuted.
FLIPPED = np.array([3, 1, 2, 0])
FLIP_POSITIONS = (FLIPPED[:, None] * 4 + FLIPPED[None, :]).reshape(-1)


def applies(x, kernel, strides: int) -> bool:
    """Whether ``conv3x3`` takes the Winograd route for this call (see the module docstring)."""
    h, w = x.shape[1:3]
    return (on_xla_cpu() and strides == 1 and kernel.shape[:2] == (3, 3) and x.dtype == jnp.float32
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

    Written as additions of kernel slices, one fusion; as an einsum with ``G`` it was two dots
    with a contraction of 3 and a transpose (256 channels: 5.7 → 0.6 ms)."""
    along_h = [_g_rows([kernel[i, j] for i in range(3)]) for j in range(3)]  # [j][a]
    return [t for a in range(4) for t in _g_rows([along_h[j][a] for j in range(3)])]


def input_tiles(x):
    """``Bᵀ d B`` of every 4×4 tile (stride 2) of ``x`` padded by 1: 16 arrays ``(tiles, channels)``.

    Kept as 16 arrays: stacked into one, XLA:CPU wrote them and then copied them into the
    stack (128 channels at 28²: 4.0 → 1.9 ms)."""
    h, w, c = x.shape[1:]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    tiles = []
    for r in _bt_rows([padded[:, a:a + h:2] for a in range(4)]):
        tiles += _bt_rows([r[:, :, b:b + w:2] for b in range(4)])
    return [t.reshape(-1, c) for t in tiles]


def output_tiles(m, shape):
    """``Aᵀ M A`` of every tile, from the 16 arrays ``m``, laid back out as NHWC ``shape``.

    Output pixel ``(2r + i, 2c + j)`` is tile ``(r, c)``'s ``(i, j)``: stacking the four on axes
    placed where NHWC wants them makes the result a reshape. Stacked in front and transposed, the
    output was written twice (ResNet-50's step, three rotated runs: 2,560 → 2,497, 2,529 → 2,517 and
    2,475 → 2,458 ms; alone, forward + both gradients at 56²: 75.5 → 73.4 ms)."""
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
