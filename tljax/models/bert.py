"""BERT-style encoders to Hugging Face's conventions (post-norm, absolute positions): ``BertModel``,
``RobertaModel`` / ``XLMRobertaModel`` / ``CamembertModel`` (``create('roberta', …)``) and, through
``tljax.models.distilbert``, ``DistilBertModel``.

``create('bert' | 'roberta', config=<config.json dict>, pooling=…)``: the Hugging Face config names the
sizes; RoBERTa's positions count the non-padding tokens from ``pad_token_id + 1`` (``padding_idx``),
so its input ids must be padded with that id. ``pooling`` picks the features: ``None`` the last
hidden state ``(batch, length, hidden)``, ``'mean'`` the attention-masked mean
(sentence-transformers), ``'cls'`` the first token, ``'pooler'`` Hugging Face's
``tanh(dense(first token))`` (``pooler_act``: ``relu`` for DistilBERT's ``pre_classifier``). Call as
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
    "gelu_python": gelu,
    "relu": nn.relu,
}
POOLER_ACTS = {"tanh": jnp.tanh, "relu": nn.relu}
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
ROBERTA_TYPES = ("roberta", "xlm-roberta", "camembert")  # model types sharing RobertaModel's layout
# roberta-base's sizes, for create('roberta') without a config.
ROBERTA_BASE = {"vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1, "layer_norm_eps": 1e-5,
                "padding_idx": 1}


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
    type_vocab_size: int = 2  # 0: no token-type embeddings (DistilBERT)
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    initializer_range: float = 0.02
    padding_idx: Optional[int] = None  # RoBERTa: positions from padding_idx + 1 skipping pad ids; None: 0, 1, …
    position_init: Optional[Any] = None  # initializer of the position table (DistilBERT's sinusoidal one)
    pooling: Optional[str] = None
    pooler_act: str = "tanh"  # 'tanh' (BERT) or 'relu' (DistilBERT's pre_classifier)
    dtype: Any = jnp.float32
    remat: bool = False  # recompute each layer's activations in the backward pass (less memory)
    cpu_kernels: bool = False  # the XLA:CPU forms of the layers (tljax.models.xla_cpu)

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, train: bool = False):
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown BERT pooling {self.pooling!r}; use one of {POOLINGS}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {self.hidden_act!r}; use one of {sorted(ACTIVATIONS)}")
        if self.pooler_act not in POOLER_ACTS:
            raise ValueError(f"unknown pooler_act {self.pooler_act!r}; use one of {sorted(POOLER_ACTS)}")
        length = input_ids.shape[1]
        longest = self.max_position_embeddings - (0 if self.padding_idx is None else self.padding_idx + 1)
        if length > longest:
            raise ValueError(f"sequence length {length} exceeds the {longest} positions of max_position_embeddings="
                             f"{self.max_position_embeddings}; set data.max_len <= {longest}")
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        init = nn.initializers.normal(self.initializer_range)

        def embed(num, name, embedding_init=init):
            return nn.Embed(num, self.hidden_size, embedding_init=embedding_init, dtype=self.dtype, name=name)

        x = embed(self.vocab_size, "word_embeddings")(input_ids)
        x = x + embed(self.max_position_embeddings, "position_embeddings", self.position_init or init)(
            position_ids(input_ids, self.padding_idx))
        if self.type_vocab_size:
            if token_type_ids is None:
                token_type_ids = jnp.zeros(input_ids.shape, jnp.int32)
            x = x + embed(self.type_vocab_size, "token_type_embeddings")(token_type_ids)
        x = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name="embeddings_norm")(x)
        x = layers(self.cpu_kernels).Dropout(self.hidden_dropout)(x, deterministic=not train)
        layer_cls = nn.remat(BertLayer, static_argnums=(3,)) if self.remat else BertLayer
        for i in range(self.num_layers):
            x = layer_cls(self.num_heads, self.intermediate_size, self.layer_norm_eps, self.hidden_act,
                          self.hidden_dropout, self.attention_dropout, self.initializer_range, self.dtype,
                          self.cpu_kernels, name=f"layer{i}")(x, attention_mask, train)
        return pool(self, x.astype(jnp.float32), attention_mask)


def position_ids(input_ids, padding_idx: Optional[int]):
    """``0, 1, …`` (BERT), or RoBERTa's: ``padding_idx`` + the running count of non-pad tokens (pads get
    ``padding_idx``), as ``create_position_ids_from_input_ids``."""
    if padding_idx is None:
        return jnp.arange(input_ids.shape[1])[None]
    real = (input_ids != padding_idx).astype(jnp.int32)
    return jnp.cumsum(real, axis=1) * real + padding_idx


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
    return POOLER_ACTS[bert.pooler_act](dense(x[:, 0]))


def fields_from_hf_config(config: Mapping[str, Any], model_types=("bert",)) -> dict:
    """Bert fields from a Hugging Face ``config.json`` dict (unknown keys are ignored); a RoBERTa-family
    config also sets ``padding_idx`` from its ``pad_token_id``."""
    model_type = config.get("model_type", model_types[0])
    if model_type not in model_types:
        raise ValueError(f"config is for model_type {model_type!r}, not one of {list(model_types)}")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"only absolute position embeddings are supported, got {config['position_embedding_type']!r}")
    fields = {field: config[key] for key, field in HF_CONFIG_KEYS.items() if key in config}
    if model_type in ROBERTA_TYPES:
        fields["padding_idx"] = int(config.get("pad_token_id", 1))
    return fields


def bert(config: Optional[Mapping[str, Any]] = None, **overrides) -> Bert:
    """``Bert`` from a Hugging Face config dict, with field overrides (``pooling='mean'``, ``dtype=…``)."""
    return Bert(**{**fields_from_hf_config(config or {}), **overrides})


def roberta(config: Optional[Mapping[str, Any]] = None, **overrides) -> Bert:
    """``Bert`` with RoBERTa's positions from a ``roberta`` / ``xlm-roberta`` / ``camembert`` config dict
    (roberta-base's sizes without one), with field overrides."""
    fields = fields_from_hf_config({"model_type": "roberta", **(config or {})}, ROBERTA_TYPES)
    return Bert(**{**ROBERTA_BASE, **fields, **overrides})
