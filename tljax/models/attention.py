"""Multi-head self-attention shared by ViT and BERT.

Query, key, value and output are separate ``(hidden, hidden)`` Dense layers (Hugging Face's
layout) so rules can name them (``.*/attention/(query|value)/.*``); fused ``in_proj``/``qkv``
checkpoints are split by the converters. Softmax runs in float32 whatever the compute dtype.

As in Hugging Face's ``BertSelfAttention``, heads are moved in front of the length axis for the
two products and the padding mask is added to the scores as a bias (``finfo.min`` where masked).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from tljax.models.layers import layers


def mask_bias(mask: jax.Array) -> jax.Array:
    """(batch, length) true where a token may be attended → float32 (batch, 1, 1, length) bias."""
    return jnp.where(mask.astype(bool), 0.0, jnp.finfo(jnp.float32).min)[:, None, None, :]


class SelfAttention(nn.Module):
    num_heads: int
    dropout_rate: float = 0.0
    kernel_init: Callable = nn.initializers.xavier_uniform()
    dtype: Any = jnp.float32
    cpu_kernels: bool = False  # the XLA:CPU forms of Dense and Dropout (tljax.models.layers)

    @nn.compact
    def __call__(self, x, mask: Optional[jax.Array] = None, train: bool = False):
        """``x``: (batch, length, hidden); ``mask``: (batch, length), true where a token may be attended."""
        hidden = x.shape[-1]
        if hidden % self.num_heads:
            raise ValueError(f"hidden size {hidden} is not divisible by num_heads={self.num_heads}")
        head_dim = hidden // self.num_heads
        L = layers(self.cpu_kernels)
        dense = lambda name: L.Dense(hidden, kernel_init=self.kernel_init, dtype=self.dtype, name=name)  # noqa: E731
        heads = lambda y: y.reshape(*y.shape[:-1], self.num_heads, head_dim).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, v = (heads(dense(name)(x)) for name in ("query", "key", "value"))  # (batch, head, length, dim)
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(head_dim).astype(jnp.float32)
        if mask is not None:
            scores = scores + mask_bias(mask)
        probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        probs = L.Dropout(self.dropout_rate)(probs, deterministic=not train)
        out = jnp.einsum("bhqk,bhkd->bhqd", probs, v).transpose(0, 2, 1, 3).reshape(x.shape)
        return dense("out")(out)
