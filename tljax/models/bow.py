"""A bag-of-embeddings text classifier backbone: where static word vectors (GloVe, word2vec,
a transformer's input table) are transferred as ``backbone/embed/embedding``."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from tljax.models.layers import layers


class BagOfEmbeddings(nn.Module):
    """Masked mean of token embeddings (``embed/embedding``), optionally one ReLU layer: the
    classic static-word-vector text classifier. ``vocab_size``/``embed_dim`` come from the table."""

    vocab_size: int
    embed_dim: int = 50
    hidden: int = 0
    dropout: float = 0.0
    cpu_kernels: bool = False  # the XLA:CPU form of Dropout (tljax.models.xla_cpu)

    @nn.compact
    def __call__(self, input_ids, train: bool = False, attention_mask=None, token_type_ids=None):
        x = nn.Embed(self.vocab_size, self.embed_dim, name="embed")(input_ids)
        mask = (jnp.ones(input_ids.shape, x.dtype) if attention_mask is None else attention_mask.astype(x.dtype))
        x = (x * mask[..., None]).sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1.0)
        x = layers(self.cpu_kernels).Dropout(self.dropout, deterministic=not train)(x)
        if self.hidden:
            x = nn.relu(nn.Dense(self.hidden, name="hidden")(x))
        return x
