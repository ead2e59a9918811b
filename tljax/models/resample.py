"""Position-embedding grids resampled to another size, as PyTorch's bicubic ``F.interpolate`` does.

``resample_pos_embed(pos, new_grid, num_prefix, antialias)`` equals timm's
``resample_abs_pos_embed`` (``antialias=True``, timm's default, also used by its
``checkpoint_filter_fn``) and the run-time ``interpolate_pos_encoding`` of Hugging Face's DINOv2,
CLIP and SigLIP (``antialias=False``; DINOv2-with-registers uses ``True``): the prefix tokens
(class, registers) are kept, the square grid after them is resized with ``align_corners=False``.
The two kernels differ: without antialias, cubic convolution with a = -0.75 and clamped borders;
with it, PIL's filter (a = -0.5, widened by the scale when shrinking, weights renormalised at the
borders). Computed in float64 with numpy; the result has the input's dtype.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def bicubic_matrix(n_in: int, n_out: int, antialias: bool) -> np.ndarray:
    """``(n_out, n_in)`` weights of torch's 1-D bicubic resize (``align_corners=False``, size given)."""
    scale = n_in / n_out
    out = np.zeros((n_out, n_in))
    for i in range(n_out):
        if antialias:
            support, inv = 2.0 * max(scale, 1.0), (1.0 / scale if scale >= 1 else 1.0)
            center = scale * (i + 0.5)
            lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
            w = _cubic((np.arange(lo, hi) - center + 0.5) * inv, -0.5)
            out[i, lo:hi] = w / w.sum() if w.sum() else w
        else:
            src = scale * (i + 0.5) - 0.5
            base = np.floor(src)
            for k in range(-1, 3):
                out[i, int(np.clip(base + k, 0, n_in - 1))] += _cubic(np.array(src - base - k), -0.75)
    return out


def grid_hw(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``(h, w)`` of a square side or an ``(h, w)`` pair."""
    return (int(size), int(size)) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))


def resample_pos_embed(pos: np.ndarray, new_grid, num_prefix: int, antialias: bool = True,
                       old_grid=None) -> np.ndarray:
    """``(1, num_prefix + H·W, D)`` → ``(1, num_prefix + h·w, D)`` for ``new_grid`` ``(h, w)`` (or a side).

    ``old_grid`` defaults to the square the length allows; a length that is no square fails by name.
    """
    pos = np.asarray(pos)
    prefix, grid = pos[:, :num_prefix], pos[:, num_prefix:]
    if old_grid is None:
        side = int(round(grid.shape[1] ** 0.5))
        if side * side != grid.shape[1]:
            raise ValueError(f"position embeddings of {grid.shape[1]} grid tokens (after {num_prefix} prefix "
                             f"tokens) are not a square grid; give the checkpoint's grid")
        old_grid = side
    (H, W), (h, w) = grid_hw(old_grid), grid_hw(new_grid)
    if (H, W) == (h, w):
        return pos
    rows, cols = bicubic_matrix(H, h, antialias), bicubic_matrix(W, w, antialias)
    grid = grid.astype(np.float64).reshape(pos.shape[0], H, W, -1)
    grid = np.einsum("ij,bjkd,lk->bild", rows, grid, cols).reshape(pos.shape[0], h * w, -1)
    return np.concatenate([prefix, grid.astype(pos.dtype)], axis=1)
