"""Hugging Face key table: ``BertModel`` (and ``bert.``-prefixed task models) → tljax paths."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

import numpy as np

from tljax.convert.common import Rule, ignore, module

_LAYER = r"encoder\.layer\.(\d+)\."
BERT: List[Rule] = [
    ignore(r"embeddings\.position_ids"),
    module(r"embeddings\.word_embeddings", "backbone/word_embeddings", kind="embed"),
    module(r"embeddings\.position_embeddings", "backbone/position_embeddings", kind="embed"),
    module(r"embeddings\.token_type_embeddings", "backbone/token_type_embeddings", kind="embed"),
    module(r"embeddings\.LayerNorm", "backbone/embeddings_norm"),
    module(_LAYER + r"attention\.self\.(query|key|value)", r"backbone/layer\1/attention/\2"),
    module(_LAYER + r"attention\.output\.dense", r"backbone/layer\1/attention/out"),
    module(_LAYER + r"attention\.output\.LayerNorm", r"backbone/layer\1/attention_norm"),
    module(_LAYER + r"intermediate\.dense", r"backbone/layer\1/intermediate"),
    module(_LAYER + r"output\.dense", r"backbone/layer\1/output"),
    module(_LAYER + r"output\.LayerNorm", r"backbone/layer\1/output_norm"),
    module(r"pooler\.dense", "backbone/pooler"),
    module(r"classifier", "head"),  # BertForSequenceClassification: a head on the pooler
]
# Dropped when the model has no place for them: the pooler (unless pooling='pooler'), pre-training heads.
BERT_OPTIONAL = (r"pooler\..*", r"cls\..*")


def strip_prefix(arrays: Mapping[str, Any], prefix: str = "bert.") -> Dict[str, Any]:
    """Task models (``BertForSequenceClassification``…) keep the encoder under ``bert.``."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in arrays.items()}


def bert_kwargs(flat: Mapping[str, np.ndarray], config: Mapping[str, Any] = None, **overrides) -> Dict[str, Any]:
    """``create('bert', ...)`` kwargs: the given config, else sizes read off the weights.

    Head count and activation cannot be read off weights; without a config they default to
    one head and GELU, which fits the shapes (enough to validate) but not the numbers.
    """
    if config is None:
        vocab, hidden = np.shape(flat["params/backbone/word_embeddings/embedding"])
        layers = {int(k.split("/")[2][5:]) for k in flat if k.startswith("params/backbone/layer")}
        config = {
            "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": max(layers, default=-1) + 1,
            "num_attention_heads": 1,
            "intermediate_size": np.shape(flat["params/backbone/layer0/intermediate/kernel"])[-1]
            if "params/backbone/layer0/intermediate/kernel" in flat else 4 * hidden,
            "max_position_embeddings": len(flat["params/backbone/position_embeddings/embedding"]),
            "type_vocab_size": len(flat["params/backbone/token_type_embeddings/embedding"]),
        }
    kwargs = {"config": dict(config), **overrides}
    if "params/head/kernel" in flat:
        kwargs.setdefault("pooling", "pooler")  # Hugging Face classifies from the pooler output
    return kwargs
