"""DistilBERT to Hugging Face's ``DistilBertModel``: a ``Bert`` without token types.

DistilBERT's block is BERT's post-norm layer under other names (``q_lin``… ``sa_layer_norm``,
``ffn.lin1/lin2``, ``output_layer_norm``; the converter maps them), with LayerNorm eps 1e-12 and
positions ``0, 1, …``. ``create('distilbert', config=<config.json dict>, pooling=…)`` reads
``dim``, ``n_layers``, ``n_heads``, ``hidden_dim``, ``activation``…; ``sinusoidal_pos_embds``
initialises the position table sinusoidally (a checkpoint stores it anyway, and it trains like
any other table). ``pooling='pooler'`` is ``relu(pre_classifier(first token))``, what
``DistilBertForSequenceClassification`` feeds its classifier.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import jax.numpy as jnp
import numpy as np

from tljax.models.bert import Bert

# DistilBERT config key -> Bert field.
CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "dim": "hidden_size",
    "n_layers": "num_layers",
    "n_heads": "num_heads",
    "hidden_dim": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "activation": "hidden_act",
    "dropout": "hidden_dropout",
    "attention_dropout": "attention_dropout",
    "initializer_range": "initializer_range",
}
# distilbert-base-uncased's sizes, for create('distilbert') without a config.
DISTILBERT_BASE = {"vocab_size": 30522, "hidden_size": 768, "num_layers": 6, "num_heads": 12,
                   "intermediate_size": 3072, "max_position_embeddings": 512}


def sinusoidal_init(key, shape, dtype=jnp.float32):
    """Hugging Face's ``create_sinusoidal_embeddings``: sin on even, cos on odd columns."""
    positions, dim = shape
    angles = np.arange(positions)[:, None] / np.power(10000, 2 * (np.arange(dim) // 2) / dim)[None]
    table = np.where(np.arange(dim) % 2 == 0, np.sin(angles), np.cos(angles))
    return jnp.asarray(table, dtype)


def fields_from_config(config: Mapping[str, Any]) -> dict:
    """Bert fields from a DistilBERT ``config.json`` dict (unknown keys are ignored)."""
    if config.get("model_type", "distilbert") != "distilbert":
        raise ValueError(f"config is for model_type {config['model_type']!r}, not 'distilbert'")
    fields = {field: config[key] for key, field in CONFIG_KEYS.items() if key in config}
    if config.get("sinusoidal_pos_embds"):
        fields["position_init"] = sinusoidal_init
    return fields


def distilbert(config: Optional[Mapping[str, Any]] = None, **overrides) -> Bert:
    """``Bert`` shaped as DistilBERT from its Hugging Face config dict, with field overrides."""
    fields = {**DISTILBERT_BASE, **fields_from_config(config or {})}
    return Bert(**{"type_vocab_size": 0, "layer_norm_eps": 1e-12, "pooler_act": "relu", **fields, **overrides})
