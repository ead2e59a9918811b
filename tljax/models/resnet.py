"""ResNet (v1.5) written to torchvision's conventions so its weights map one to one.

Conventions kept on purpose: explicit torch-style padding (never ``SAME``), convolutions
without bias, BatchNorm with ε = 1e-5 and torch momentum 0.1 (flax momentum 0.9), the
stride on the 3×3 convolution of a bottleneck, NHWC activations and HWIO kernels.
A ``small`` stem (3×3 stride 1, no max-pool) serves 8×8 digits. ``cpu_kernels`` builds it from
the XLA:CPU forms of its layers (``tljax.models.layers``): same parameters and values.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from tljax.models.layers import Layers, layers

# torchvision initialises convolutions with kaiming_normal(mode="fan_out").
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv(L: Layers, features, size, strides=1, dtype=jnp.float32, name=None):
    """torchvision's ``size``×``size`` convolution: no bias, padding ``size // 2``."""
    pad = (size // 2, size // 2)
    return L.Conv(features, (size, size), (strides, strides), padding=(pad, pad), use_bias=False,
                  kernel_init=conv_init, dtype=dtype, name=name)


def batch_norm(L: Layers, name, zero_init=False, dtype=jnp.float32):
    return L.BatchNorm(momentum=0.9, epsilon=1e-5, name=name, dtype=dtype,
                       scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones)


class BasicBlock(nn.Module):
    features: int
    strides: int = 1
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    cpu_kernels: bool = False
    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool):
        L = layers(self.cpu_kernels)
        norm = lambda name, zero=False: batch_norm(L, name, zero, self.dtype)  # noqa: E731
        y = conv(L, self.features, 3, self.strides, self.dtype, name="conv1")(x)
        y = nn.relu(norm("bn1")(y, use_running_average=not train))
        y = conv(L, self.features, 3, dtype=self.dtype, name="conv2")(y)
        y = norm("bn2", self.zero_init_residual)(y, use_running_average=not train)
        return L.residual_relu(y + shortcut(L, self, x, self.features, train))


class Bottleneck(nn.Module):
    features: int
    strides: int = 1
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    cpu_kernels: bool = False
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool):
        L = layers(self.cpu_kernels)
        norm = lambda name, zero=False: batch_norm(L, name, zero, self.dtype)  # noqa: E731
        y = conv(L, self.features, 1, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(norm("bn1")(y, use_running_average=not train))
        y = conv(L, self.features, 3, self.strides, self.dtype, name="conv2")(y)
        y = nn.relu(norm("bn2")(y, use_running_average=not train))
        y = conv(L, self.features * 4, 1, dtype=self.dtype, name="conv3")(y)
        y = norm("bn3", self.zero_init_residual)(y, use_running_average=not train)
        return L.residual_relu(y + shortcut(L, self, x, self.features * 4, train))


def shortcut(L: Layers, block, x, out_features, train):
    """Identity, or torchvision's ``downsample`` (1×1 conv + BN) when the shape changes."""
    if block.strides == 1 and x.shape[-1] == out_features:
        return x
    y = conv(L, out_features, 1, block.strides, block.dtype, name="downsample_conv")(x)
    return batch_norm(L, "downsample_bn", dtype=block.dtype)(y, use_running_average=not train)


class Stage(nn.Module):
    """torchvision's ``layerN``: blocks named ``block0``, ``block1``, …"""

    block_cls: Any
    num_blocks: int
    features: int
    strides: int
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    remat: bool = False
    cpu_kernels: bool = False

    @nn.compact
    def __call__(self, x, train: bool):
        block_cls = nn.remat(self.block_cls, static_argnums=(2,)) if self.remat else self.block_cls
        for i in range(self.num_blocks):
            x = block_cls(self.features, self.strides if i == 0 else 1, self.zero_init_residual, self.dtype,
                          self.cpu_kernels, name=f"block{i}")(x, train)
        return x


class ResNet(nn.Module):
    """Backbone only: returns globally average-pooled features ``(batch, channels)``."""

    stage_sizes: Sequence[int]
    block_cls: Any
    widths: Sequence[int] = (64, 128, 256, 512)
    stem: str = "imagenet"  # "imagenet": 7×7/2 conv + 3×3/2 max-pool; "small": 3×3/1 conv
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    remat: bool = False  # recompute each block's activations in the backward pass (less memory)
    cpu_kernels: bool = False  # the XLA:CPU forms of the layers (tljax.models.xla_cpu)

    @nn.compact
    def __call__(self, x, train: bool = False):
        L = layers(self.cpu_kernels)
        x = x.astype(self.dtype)
        if self.stem not in ("imagenet", "small"):
            raise ValueError(f"unknown ResNet stem {self.stem!r}; use 'imagenet' or 'small'")
        if self.stem == "imagenet":
            x = conv(L, self.widths[0], 7, 2, self.dtype, name="conv1")(x)
        else:
            x = conv(L, self.widths[0], 3, dtype=self.dtype, name="conv1")(x)
        x = nn.relu(batch_norm(L, "bn1", dtype=self.dtype)(x, use_running_average=not train))
        if self.stem == "imagenet":
            x = L.max_pool_3x3_s2(x)
        for i, (size, width) in enumerate(zip(self.stage_sizes, self.widths)):
            x = Stage(self.block_cls, size, width, 1 if i == 0 else 2, self.zero_init_residual,
                      self.dtype, self.remat, self.cpu_kernels, name=f"layer{i + 1}")(x, train)
        return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


RESNETS = {
    "resnet18": dict(stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock),
    "resnet34": dict(stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock),
    "resnet50": dict(stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck),
    "resnet101": dict(stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck),
    "resnet152": dict(stage_sizes=(3, 8, 36, 3), block_cls=Bottleneck),
    # A small ResNet for 8×8 sklearn digits: the foundation demo's source model.
    "resnet_digits": dict(stage_sizes=(1, 1, 1), block_cls=BasicBlock, widths=(64, 128, 256), stem="small"),
}
