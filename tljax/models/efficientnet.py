"""EfficientNet-B0…B3 (Tan & Le 2019) to timm's ``efficientnet_b*`` conventions, so its weights map one to one.

Kept on purpose: timm's channel rounding (``round_channels``: multiples of 8, never below 90 %)
and depth scaling (each stage's repeats × ``depth_mult``, rounded up), symmetric padding k//2
(timm's non-``tf_`` variants), convolutions without bias, BatchNorm ε 1e-5 with torch momentum 0.1,
SiLU, squeeze-excite on the block input's channels × 0.25. Paths follow timm's names: ``conv_stem``,
``bn1``, ``layer{s}/block{b}/{conv_pw, bn1, conv_dw, bn2, se/conv_reduce, se/conv_expand,
conv_pwl, bn3}`` (the first stage's blocks: ``conv_dw, bn1, se, conv_pw, bn2``), ``conv_head``,
``bn_head`` (timm's ``bn2``). Features are the globally average-pooled ``bn_head`` output.
"""

from __future__ import annotations

import math
from typing import Any, List, NamedTuple, Tuple

import flax.linen as nn
import jax.numpy as jnp

from tljax.models.convnext import drop_path
from tljax.models.layers import Layers, layers

# torch's EfficientNet initialisation: kaiming_normal(mode="fan_out") for convolutions.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class StageDef(NamedTuple):
    repeats: int
    kernel: int
    stride: int
    expand: int  # 1: depthwise-separable block (no expansion conv)
    channels: int


# timm's arch_def for efficientnet_b0 (ds_r1_k3_s1_e1_c16_se0.25, ir_r2_k3_s2_e6_c24_se0.25, …).
STAGES = (StageDef(1, 3, 1, 1, 16), StageDef(2, 3, 2, 6, 24), StageDef(2, 5, 2, 6, 40), StageDef(3, 3, 2, 6, 80),
          StageDef(3, 5, 1, 6, 112), StageDef(4, 5, 2, 6, 192), StageDef(1, 3, 1, 6, 320))


def make_divisible(v: float, divisor: int = 8) -> int:
    """timm's ``make_divisible``: the nearest multiple of ``divisor``, never more than 10 % below ``v``."""
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


def round_channels(channels: int, width_mult: float) -> int:
    return make_divisible(channels * width_mult)


def stage_depths(depth_mult: float) -> List[int]:
    return [int(math.ceil(s.repeats * depth_mult)) for s in STAGES]


def conv(L: Layers, features: int, size: int, strides: int = 1, groups: int = 1, dtype=jnp.float32, name=None):
    pad = (size // 2, size // 2)
    return L.Conv(features, (size, size), (strides, strides), padding=(pad, pad), use_bias=False,
                  feature_group_count=groups, kernel_init=conv_init, dtype=dtype, name=name)


class SqueezeExcite(nn.Module):
    """Global mean → 1×1 conv (``reduced``) → SiLU → 1×1 conv → sigmoid gate on the input."""

    reduced: int
    dtype: Any = jnp.float32
    cpu_kernels: bool = False

    @nn.compact
    def __call__(self, x):
        L = layers(self.cpu_kernels)
        y = jnp.mean(x, axis=(1, 2), keepdims=True)
        y = nn.silu(L.Conv(self.reduced, (1, 1), dtype=self.dtype, name="conv_reduce")(y))
        y = L.Conv(x.shape[-1], (1, 1), dtype=self.dtype, name="conv_expand")(y)
        return x * nn.sigmoid(y)


class MBConv(nn.Module):
    """timm's ``InvertedResidual`` (``expand`` > 1) or ``DepthwiseSeparableConv`` (``expand`` == 1)."""

    out: int
    kernel: int
    stride: int
    expand: int
    drop_path_rate: float = 0.0
    bn_eps: float = 1e-5
    dtype: Any = jnp.float32
    cpu_kernels: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        L = layers(self.cpu_kernels)
        bn = lambda name, y: L.BatchNorm(momentum=0.9, epsilon=self.bn_eps, dtype=self.dtype,  # noqa: E731
                                         name=name)(y, use_running_average=not train)
        channels = x.shape[-1]
        if self.expand == 1:
            se = SqueezeExcite(round(channels * 0.25), self.dtype, self.cpu_kernels, name="se")
            y = conv(L, channels, self.kernel, self.stride, channels, self.dtype, name="conv_dw")(x)
            y = se(nn.silu(bn("bn1", y)))
            y = bn("bn2", conv(L, self.out, 1, dtype=self.dtype, name="conv_pw")(y))
        else:
            mid = make_divisible(channels * self.expand)
            se = SqueezeExcite(round(mid * (0.25 / self.expand)), self.dtype, self.cpu_kernels, name="se")  # timm's
            y = nn.silu(bn("bn1", conv(L, mid, 1, dtype=self.dtype, name="conv_pw")(x)))
            y = conv(L, mid, self.kernel, self.stride, mid, self.dtype, name="conv_dw")(y)
            y = se(nn.silu(bn("bn2", y)))
            y = bn("bn3", conv(L, self.out, 1, dtype=self.dtype, name="conv_pwl")(y))
        if self.stride == 1 and channels == self.out:
            y = x + drop_path(self, y, self.drop_path_rate, train)
        return y


class Stage(nn.Module):
    """timm's ``blocks.S``: blocks ``block0``, ``block1``, … (the first one strided)."""

    spec: StageDef
    out: int
    drop_path_rates: Tuple[float, ...]
    bn_eps: float = 1e-5
    dtype: Any = jnp.float32
    remat: bool = False
    cpu_kernels: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        block_cls = nn.remat(MBConv, static_argnums=(2,)) if self.remat else MBConv
        for b, rate in enumerate(self.drop_path_rates):
            x = block_cls(self.out, self.spec.kernel, self.spec.stride if b == 0 else 1, self.spec.expand, rate,
                          self.bn_eps, self.dtype, self.cpu_kernels, name=f"block{b}")(x, train)
        return x


class EfficientNet(nn.Module):
    """Backbone only: globally average-pooled features ``(batch, num_features × width_mult, rounded)``."""

    width_mult: float = 1.0
    depth_mult: float = 1.0
    stem_size: int = 32
    num_features: int = 1280
    bn_eps: float = 1e-5
    drop_path_rate: float = 0.0  # stochastic depth of the last block (linear from 0), training only
    dropout_rate: float = 0.0  # on the pooled features, training only
    dtype: Any = jnp.float32
    remat: bool = False  # recompute each block's activations in the backward pass (less memory)
    cpu_kernels: bool = False  # the XLA:CPU forms of the layers (tljax.models.xla_cpu)

    @nn.compact
    def __call__(self, x, train: bool = False):
        L = layers(self.cpu_kernels)
        bn = lambda name, y: L.BatchNorm(momentum=0.9, epsilon=self.bn_eps, dtype=self.dtype,  # noqa: E731
                                         name=name)(y, use_running_average=not train)
        x = conv(L, round_channels(self.stem_size, self.width_mult), 3, 2, dtype=self.dtype,
                 name="conv_stem")(x.astype(self.dtype))
        x = nn.silu(bn("bn1", x))
        depths = stage_depths(self.depth_mult)
        starts = [sum(depths[:s]) for s in range(len(depths))]
        for s, (spec, depth) in enumerate(zip(STAGES, depths)):
            rates = tuple(self.drop_path_rate * (starts[s] + b) / sum(depths) for b in range(depth))  # timm's
            x = Stage(spec, round_channels(spec.channels, self.width_mult), rates, self.bn_eps, self.dtype,
                      self.remat, self.cpu_kernels, name=f"layer{s}")(x, train)
        x = conv(L, round_channels(self.num_features, self.width_mult), 1, dtype=self.dtype, name="conv_head")(x)
        x = jnp.mean(nn.silu(bn("bn_head", x)), axis=(1, 2))
        return L.Dropout(self.dropout_rate)(x, deterministic=not train).astype(jnp.float32)


EFFICIENTNETS = {  # timm's (width, depth) multipliers
    "efficientnet_b0": dict(width_mult=1.0, depth_mult=1.0),
    "efficientnet_b1": dict(width_mult=1.0, depth_mult=1.1),
    "efficientnet_b2": dict(width_mult=1.1, depth_mult=1.2),
    "efficientnet_b3": dict(width_mult=1.2, depth_mult=1.4),
}
