"""ConvNeXt (Liu et al. 2022) as a configurable family, to timm's and Hugging Face's conventions.

A 4×4/4 patchify stem + LayerNorm, four stages (stage 0 without a downsample; the others begin
with LayerNorm + 2×2/2 convolution), blocks of depthwise 7×7 convolution, LayerNorm (ε 1e-6),
an MLP of ratio 4 with exact GELU, and LayerScale ``gamma``. Features (``output='pooled'``) are
the global average pool followed by the final LayerNorm ``norm`` (timm's ``head.norm``, Hugging
Face's pooler ``layernorm``, whose ε is ``head_norm_eps``); ``output='last_hidden_state'`` returns the
last stage's NHWC map instead (Hugging Face's ``last_hidden_state``, transposed). Paths: ``stem_conv``,
``stem_norm``, ``layer{s}/downsample_norm``, ``layer{s}/downsample_conv``, ``layer{s}/block{j}/…``, ``norm``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tljax.models.activations import gelu
from tljax.models.layers import layers

OUTPUTS = ("pooled", "last_hidden_state")


def drop_path(module: nn.Module, x, rate: float, train: bool):
    """Stochastic depth: a residual branch dropped per example with ``rate`` (train only), kept ones × 1/(1−rate)."""
    if not train or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def layer_norm(eps: float, dtype, name: str) -> nn.LayerNorm:
    """torch's LayerNorm over the channels (two-pass variance, as torch computes it)."""
    return nn.LayerNorm(epsilon=eps, dtype=dtype, use_fast_variance=False, name=name)


def stage_rates(depths: Sequence[int], rate: float):
    """timm's and Hugging Face's per-block drop-path rates: linear from 0 to ``rate`` over all blocks."""
    total = max(sum(depths) - 1, 1)
    flat = [rate * i / total for i in range(sum(depths))]
    starts = [sum(depths[:i]) for i in range(len(depths))]
    return [tuple(flat[s:s + d]) for s, d in zip(starts, depths)]


class Block(nn.Module):
    """Depthwise conv → LayerNorm → MLP (GELU) → LayerScale, plus the input."""

    dim: int
    kernel_size: int = 7
    mlp_ratio: int = 4
    layer_scale: bool = True
    norm_eps: float = 1e-6
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32
    cpu_kernels: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        L = layers(self.cpu_kernels)
        k, pad = self.kernel_size, self.kernel_size // 2
        y = L.Conv(self.dim, (k, k), padding=((pad, pad), (pad, pad)), feature_group_count=self.dim,
                   dtype=self.dtype, name="conv_dw")(x)
        y = layer_norm(self.norm_eps, self.dtype, "norm")(y)
        y = L.Dense(self.mlp_ratio * self.dim, dtype=self.dtype, name="mlp_fc1")(y)
        y = L.Dense(self.dim, dtype=self.dtype, name="mlp_fc2")(gelu(y))
        if self.layer_scale:
            y = y * self.param("gamma", nn.initializers.constant(1e-6), (self.dim,)).astype(y.dtype)
        return x + drop_path(self, y, self.drop_path_rate, train)


class Stage(nn.Module):
    """An optional downsample (LayerNorm + 2×2/2 conv), then blocks ``block0``, ``block1``, …"""

    dim: int
    drop_path_rates: Sequence[float]
    downsample: bool
    kernel_size: int = 7
    mlp_ratio: int = 4
    layer_scale: bool = True
    norm_eps: float = 1e-6
    dtype: Any = jnp.float32
    remat: bool = False
    cpu_kernels: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.downsample:
            x = layer_norm(self.norm_eps, self.dtype, "downsample_norm")(x)
            x = layers(self.cpu_kernels).Conv(self.dim, (2, 2), (2, 2), padding="VALID", dtype=self.dtype,
                                              name="downsample_conv")(x)
        block_cls = nn.remat(Block, static_argnums=(2,)) if self.remat else Block
        for j, rate in enumerate(self.drop_path_rates):
            x = block_cls(self.dim, self.kernel_size, self.mlp_ratio, self.layer_scale, self.norm_eps, rate,
                          self.dtype, self.cpu_kernels, name=f"block{j}")(x, train)
        return x


class ConvNeXt(nn.Module):
    """Backbone only: ``(batch, dims[-1])`` pooled and normalised features, or the last NHWC map."""

    depths: Sequence[int] = (3, 3, 9, 3)
    dims: Sequence[int] = (96, 192, 384, 768)
    patch_size: int = 4
    kernel_size: int = 7
    mlp_ratio: int = 4
    layer_scale: bool = True  # LayerScale gamma (timm ls_init_value / HF layer_scale_init_value > 0)
    norm_eps: float = 1e-6  # stem, downsample and block LayerNorms
    head_norm_eps: float = 1e-6  # the final norm: timm 1e-6, Hugging Face config.layer_norm_eps
    output: str = "pooled"  # or "last_hidden_state"
    drop_path_rate: float = 0.0  # stochastic depth of the last block (linear from 0), training only
    dropout_rate: float = 0.0  # on the pooled features, training only
    dtype: Any = jnp.float32
    remat: bool = False  # recompute each block's activations in the backward pass (less memory)
    cpu_kernels: bool = False  # the XLA:CPU forms of the layers (tljax.models.xla_cpu)

    @nn.compact
    def __call__(self, x, train: bool = False):
        if len(self.depths) != len(self.dims) or not self.depths:
            raise ValueError(f"ConvNeXt needs one dim per stage: depths={tuple(self.depths)}, dims={tuple(self.dims)}")
        if self.output not in OUTPUTS:
            raise ValueError(f"unknown ConvNeXt output {self.output!r}; use one of {OUTPUTS}")
        L = layers(self.cpu_kernels)
        p = self.patch_size
        x = L.Conv(self.dims[0], (p, p), (p, p), padding="VALID", dtype=self.dtype,
                   name="stem_conv")(x.astype(self.dtype))
        x = layer_norm(self.norm_eps, self.dtype, "stem_norm")(x)
        rates = stage_rates(self.depths, self.drop_path_rate)
        for i, dim in enumerate(self.dims):
            x = Stage(dim, rates[i], i > 0, self.kernel_size, self.mlp_ratio, self.layer_scale, self.norm_eps,
                      self.dtype, self.remat, self.cpu_kernels, name=f"layer{i}")(x, train)
        if self.output == "last_hidden_state":
            return x.astype(jnp.float32)
        x = layer_norm(self.head_norm_eps, self.dtype, "norm")(jnp.mean(x, axis=(1, 2)))
        return L.Dropout(self.dropout_rate)(x, deterministic=not train).astype(jnp.float32)


# timm's sizes (convnext_atto … convnext_large).
CONVNEXTS = {
    "convnext": dict(),  # sizes given as create kwargs (depths=, dims=); defaults are convnext_tiny's
    "convnext_atto": dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)),
    "convnext_femto": dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384)),
    "convnext_pico": dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512)),
    "convnext_nano": dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640)),
    "convnext_tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    "convnext_small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "convnext_base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
    "convnext_large": dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
}
