"""Multi-head self-attention shared by ViT and BERT.

Query, key, value and output are separate ``(hidden, hidden)`` Dense layers (Hugging Face's
layout) so rules can name them (``.*/attention/(query|value)/.*``); fused ``in_proj``/``qkv``
checkpoints are split by the converters. Softmax runs in float32 whatever the compute dtype.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from tljax.models.dots import Dense
from tljax.models.dropout import Dropout


class SelfAttention(nn.Module):
    num_heads: int
    dropout_rate: float = 0.0
    kernel_init: Callable = nn.initializers.xavier_uniform()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, mask: Optional[jax.Array] = None, train: bool = False):
        """``x``: (batch, length, hidden); ``mask``: (batch, length), true where a token may be attended."""
        hidden = x.shape[-1]
        if hidden % self.num_heads:
            raise ValueError(f"hidden size {hidden} is not divisible by num_heads={self.num_heads}")
        head_dim = hidden // self.num_heads
        dense = lambda name: Dense(hidden, kernel_init=self.kernel_init, dtype=self.dtype, name=name)  # noqa: E731
        split = lambda y: y.reshape(*y.shape[:-1], self.num_heads, head_dim)  # noqa: E731
        q, k, v = (split(dense(name)(x)) for name in ("query", "key", "value"))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(head_dim).astype(jnp.float32)
        if mask is not None:
            scores = jnp.where(mask[:, None, None, :].astype(bool), scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        probs = Dropout(self.dropout_rate)(probs, deterministic=not train)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(x.shape)
        return dense("out")(out)
