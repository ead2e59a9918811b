"""Vision Transformer (ViT-B/16) to torchvision's and timm's conventions (pre-norm, exact GELU, ε = 1e-6).

Features are the final-LayerNorm'd class token; the head is the Classifier's ``head``.
Position embeddings have a fixed length set by ``image_size`` (224 → 14×14 patches + 1).
``cpu_kernels`` builds it from the XLA:CPU forms of its layers (``tljax.models.layers``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from tljax.models.activations import gelu
from tljax.models.attention import SelfAttention
from tljax.models.layers import layers


class EncoderBlock(nn.Module):
    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    cpu_kernels: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        L = layers(self.cpu_kernels)
        norm = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=name)  # noqa: E731
        drop = lambda y: L.Dropout(self.dropout_rate)(y, deterministic=not train)  # noqa: E731
        y = SelfAttention(self.num_heads, self.attention_dropout_rate, dtype=self.dtype, cpu_kernels=self.cpu_kernels,
                          name="attention")(norm("norm1")(x), train=train)
        x = x + drop(y)
        y = L.Dense(self.mlp_dim, dtype=self.dtype, name="mlp_fc1")(norm("norm2")(x))
        y = L.Dense(x.shape[-1], dtype=self.dtype, name="mlp_fc2")(drop(gelu(y)))
        return x + drop(y)


class ViT(nn.Module):
    """Backbone only: returns the class token's features ``(batch, hidden_size)``."""

    patch_size: int = 16
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    image_size: int = 224
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    remat: bool = False  # recompute each block's activations in the backward pass (less memory)
    cpu_kernels: bool = False  # the XLA:CPU forms of the layers (tljax.models.xla_cpu)

    @nn.compact
    def __call__(self, x, train: bool = False):
        p = self.patch_size
        grid = self.image_size // p
        if x.shape[1:3] != (grid * p, grid * p):
            raise ValueError(f"ViT built for {self.image_size}² images (image_size={self.image_size}), "
                             f"got {x.shape[1]}×{x.shape[2]}; resize or create the model with image_size=")
        x = nn.Conv(self.hidden_size, (p, p), (p, p), padding="VALID", dtype=self.dtype,
                    name="patch_embed")(x.astype(self.dtype))
        x = x.reshape(x.shape[0], -1, self.hidden_size)  # row-major over the grid, like torch's flatten(2)
        cls = self.param("cls_token", nn.initializers.zeros, (1, 1, self.hidden_size))
        x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.hidden_size)).astype(x.dtype), x], axis=1)
        x = x + self.param("pos_embed", nn.initializers.normal(0.02), (1, grid * grid + 1, self.hidden_size))
        x = layers(self.cpu_kernels).Dropout(self.dropout_rate)(x, deterministic=not train)
        block_cls = nn.remat(EncoderBlock, static_argnums=(2,)) if self.remat else EncoderBlock
        for i in range(self.num_layers):
            x = block_cls(self.num_heads, self.mlp_dim, self.dropout_rate, self.attention_dropout_rate,
                          self.dtype, self.cpu_kernels, name=f"layer{i}")(x, train)
        x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
        return x[:, 0].astype(jnp.float32)


VITS = {
    "vit_b16": dict(patch_size=16, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
}
