"""BERT encoder to Hugging Face's ``BertModel`` conventions (post-norm, absolute positions).

``create('bert', config=<config.json dict>, pooling=…)``: the Hugging Face config names the
sizes; ``pooling`` picks the features: ``None`` the last hidden state ``(batch, length,
hidden)``, ``'mean'`` the attention-masked mean (sentence-transformers), ``'cls'`` the first
token, ``'pooler'`` Hugging Face's ``tanh(dense(first token))``. Call as
``model.apply(v, input_ids, attention_mask=mask, token_type_ids=None, train=False)``;
dropout draws from the ``'dropout'`` rng when ``train=True``. ``cpu_kernels`` builds it from
the XLA:CPU forms of its layers (``tljax.models.layers``): same parameters.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.linen as nn
import jax.numpy as jnp

from tljax.models.activations import gelu
from tljax.models.attention import SelfAttention
from tljax.models.layers import layers

ACTIVATIONS = {
    "gelu": gelu,
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
    "relu": nn.relu,
}
POOLINGS = (None, "mean", "cls", "pooler")

# Hugging Face config key -> Bert field.
HF_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "layer_norm_eps": "layer_norm_eps",
    "hidden_act": "hidden_act",
    "hidden_dropout_prob": "hidden_dropout",
    "attention_probs_dropout_prob": "attention_dropout",
    "initializer_range": "initializer_range",
}


class BertLayer(nn.Module):
    num_heads: int
    intermediate_size: int
    layer_norm_eps: float
    hidden_act: str
    hidden_dropout: float
    attention_dropout: float
    initializer_range: float
    dtype: Any = jnp.float32
    cpu_kernels: bool = False

    @nn.compact
    def __call__(self, x, mask, train: bool):
        L = layers(self.cpu_kernels)
        init = nn.initializers.normal(self.initializer_range)
        norm = lambda name: nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name=name)  # noqa: E731
        drop = lambda y: L.Dropout(self.hidden_dropout)(y, deterministic=not train)  # noqa: E731
        y = SelfAttention(self.num_heads, self.attention_dropout, init, self.dtype, self.cpu_kernels,
                          name="attention")(x, mask, train)
        x = norm("attention_norm")(x + drop(y))
        y = L.Dense(self.intermediate_size, kernel_init=init, dtype=self.dtype, name="intermediate")(x)
        y = L.Dense(x.shape[-1], kernel_init=init, dtype=self.dtype, name="output")(ACTIVATIONS[self.hidden_act](y))
        return norm("output_norm")(x + drop(y))


class Bert(nn.Module):
    """Backbone only; see the module docstring for ``pooling``. Defaults are bert-base's."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    initializer_range: float = 0.02
    pooling: Optional[str] = None
    dtype: Any = jnp.float32
    remat: bool = False  # recompute each layer's activations in the backward pass (less memory)
    cpu_kernels: bool = False  # the XLA:CPU forms of the layers (tljax.models.xla_cpu)

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, train: bool = False):
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown BERT pooling {self.pooling!r}; use one of {POOLINGS}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {self.hidden_act!r}; use one of {sorted(ACTIVATIONS)}")
        length = input_ids.shape[1]
        if length > self.max_position_embeddings:
            raise ValueError(f"sequence length {length} exceeds max_position_embeddings={self.max_position_embeddings}")
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        if token_type_ids is None:
            token_type_ids = jnp.zeros(input_ids.shape, jnp.int32)
        init = nn.initializers.normal(self.initializer_range)

        def embed(num, name):
            return nn.Embed(num, self.hidden_size, embedding_init=init, dtype=self.dtype, name=name)

        x = (embed(self.vocab_size, "word_embeddings")(input_ids)
             + embed(self.max_position_embeddings, "position_embeddings")(jnp.arange(length)[None])
             + embed(self.type_vocab_size, "token_type_embeddings")(token_type_ids))
        x = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name="embeddings_norm")(x)
        x = layers(self.cpu_kernels).Dropout(self.hidden_dropout)(x, deterministic=not train)
        layer_cls = nn.remat(BertLayer, static_argnums=(3,)) if self.remat else BertLayer
        for i in range(self.num_layers):
            x = layer_cls(self.num_heads, self.intermediate_size, self.layer_norm_eps, self.hidden_act,
                          self.hidden_dropout, self.attention_dropout, self.initializer_range, self.dtype,
                          self.cpu_kernels, name=f"layer{i}")(x, attention_mask, train)
        return pool(self, x.astype(jnp.float32), attention_mask)


def pool(bert: Bert, x, attention_mask):
    """The features ``pooling`` asks for, from the last hidden state ``x``."""
    if bert.pooling is None:
        return x
    if bert.pooling == "mean":
        m = attention_mask.astype(x.dtype)[..., None]
        return (x * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
    if bert.pooling == "cls":
        return x[:, 0]
    dense = nn.Dense(bert.hidden_size, kernel_init=nn.initializers.normal(bert.initializer_range), name="pooler")
    return jnp.tanh(dense(x[:, 0]))


def fields_from_hf_config(config: Mapping[str, Any]) -> dict:
    """Bert fields from a Hugging Face ``config.json`` dict (unknown keys are ignored)."""
    if config.get("model_type", "bert") != "bert":
        raise ValueError(f"config is for model_type {config['model_type']!r}, not 'bert'")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"only absolute position embeddings are supported, got {config['position_embedding_type']!r}")
    return {field: config[key] for key, field in HF_CONFIG_KEYS.items() if key in config}


def bert(config: Optional[Mapping[str, Any]] = None, **overrides) -> Bert:
    """``Bert`` from a Hugging Face config dict, with field overrides (``pooling='mean'``, ``dtype=…``)."""
    return Bert(**{**fields_from_hf_config(config or {}), **overrides})
