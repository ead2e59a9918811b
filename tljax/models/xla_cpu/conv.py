"""``nn.Conv`` whose 1×1 and 3×3 convolutions run as the dots of ``dots.conv1x1`` and ``winograd.conv3x3``.

``Conv`` is ``nn.Conv`` itself (same fields, parameters and initialisation) with its
``conv_general_dilated`` replaced: NHWC/HWIO 1×1 convolutions without padding and 3×3 ones with
padding 1 (no dilation, one feature group, default precision) take those forms; every other call is
``lax.conv_general_dilated``, as in ``nn.Conv``.
"""

from __future__ import annotations

import functools

import flax.linen as nn
from jax import lax

from tljax.models.xla_cpu.dots import conv1x1
from tljax.models.xla_cpu.winograd import DIMENSIONS, conv3x3


def _is_padding(padding, p: int) -> bool:
    if isinstance(padding, str):
        return padding == "VALID" and p == 0
    return [tuple(pair) for pair in padding] == [(p, p), (p, p)]


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """``lax.conv_general_dilated``'s signature and values (as ``nn.Conv`` calls it)."""
    size = rhs.shape[0] if rhs.ndim == 4 else None
    strides = tuple(window_strides)
    covered = (lhs.ndim == 4 and size in (1, 3) and rhs.shape[1] == size and len(set(strides)) == 1
               and _is_padding(padding, size // 2) and not kwargs and precision is None
               and feature_group_count == 1 and all(d in (None, 1, (1, 1)) for d in (lhs_dilation, rhs_dilation))
               and dimension_numbers == lax.conv_dimension_numbers(lhs.shape, rhs.shape, DIMENSIONS))
    if not covered:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, precision=precision, **kwargs)
    return (conv1x1 if size == 1 else conv3x3)(lhs, rhs, strides[0])


Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)  # same parameters as nn.Conv
