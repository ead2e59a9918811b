"""Hugging Face key tables → tljax paths: ``BertModel``, ``RobertaModel`` (XLM-R, CamemBERT) and
``DistilBertModel``, and their task models (``bert.``/``roberta.``/``distilbert.`` prefixes).

Sequence-classification heads: BERT's ``classifier`` sits on the pooler; RoBERTa's
``classifier.dense`` → tanh → ``classifier.out_proj`` on the first token is the same thing, so
``dense`` maps to ``backbone/pooler`` and ``out_proj`` to ``head``; DistilBERT's
``pre_classifier`` → ReLU → ``classifier`` maps the same way (the model's ``pooler_act`` is relu).
Other task heads (masked-LM, QA, token classification) are dropped when loading the encoder.
"""

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
BERT_OPTIONAL = (r"pooler\..*", r"cls\..*", r"qa_outputs\..*")
# RobertaForSequenceClassification's two-layer head: dense + tanh is a pooler, out_proj the head.
ROBERTA: List[Rule] = [
    module(r"classifier\.dense", "backbone/pooler"),
    module(r"classifier\.out_proj", "head"),
] + BERT
ROBERTA_OPTIONAL = BERT_OPTIONAL + (r"lm_head\..*",)

_BLOCK = r"transformer\.layer\.(\d+)\."
DISTILBERT: List[Rule] = [
    ignore(r"embeddings\.position_ids"),
    module(r"embeddings\.word_embeddings", "backbone/word_embeddings", kind="embed"),
    module(r"embeddings\.position_embeddings", "backbone/position_embeddings", kind="embed"),
    module(r"embeddings\.LayerNorm", "backbone/embeddings_norm"),
    *(module(_BLOCK + rf"attention\.{short}_lin", rf"backbone/layer\1/attention/{name}")
      for short, name in (("q", "query"), ("k", "key"), ("v", "value"), ("out", "out"))),
    module(_BLOCK + r"sa_layer_norm", r"backbone/layer\1/attention_norm"),
    module(_BLOCK + r"ffn\.lin1", r"backbone/layer\1/intermediate"),
    module(_BLOCK + r"ffn\.lin2", r"backbone/layer\1/output"),
    module(_BLOCK + r"output_layer_norm", r"backbone/layer\1/output_norm"),
    module(r"pre_classifier", "backbone/pooler"),
    module(r"classifier", "head"),  # DistilBertForSequenceClassification
]
DISTILBERT_OPTIONAL = (r"vocab_(transform|layer_norm|projector)\..*", r"qa_outputs\..*")


def strip_prefix(arrays: Mapping[str, Any], prefix: str = "bert.") -> Dict[str, Any]:
    """Task models (``BertForSequenceClassification``…) keep the encoder under ``bert.``."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in arrays.items()}


def sizes_off_weights(flat: Mapping[str, np.ndarray]) -> Dict[str, int]:
    """A BERT-style config (Hugging Face BERT keys) read off converted weights: one head, default activation."""
    vocab, hidden = np.shape(flat["params/backbone/word_embeddings/embedding"])
    layers = {int(k.split("/")[2][5:]) for k in flat if k.startswith("params/backbone/layer")}
    config = {
        "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": max(layers, default=-1) + 1,
        "num_attention_heads": 1,
        "intermediate_size": np.shape(flat["params/backbone/layer0/intermediate/kernel"])[-1]
        if "params/backbone/layer0/intermediate/kernel" in flat else 4 * hidden,
        "max_position_embeddings": len(flat["params/backbone/position_embeddings/embedding"]),
    }
    if "params/backbone/token_type_embeddings/embedding" in flat:
        config["type_vocab_size"] = len(flat["params/backbone/token_type_embeddings/embedding"])
    return config


def bert_kwargs(flat: Mapping[str, np.ndarray], config: Mapping[str, Any] = None, **overrides) -> Dict[str, Any]:
    """``create('bert', ...)`` kwargs: the given config, else sizes read off the weights.

    Head count and activation cannot be read off weights; without a config they default to
    one head and GELU, which fits the shapes (enough to validate) but not the numbers.
    """
    kwargs = {"config": dict(sizes_off_weights(flat) if config is None else config), **overrides}
    if "params/head/kernel" in flat:
        kwargs.setdefault("pooling", "pooler")  # Hugging Face classifies from the pooler output
    return kwargs


def roberta_kwargs(flat: Mapping[str, np.ndarray], config: Mapping[str, Any] = None, **overrides) -> Dict[str, Any]:
    """``create('roberta', ...)`` kwargs, as ``bert_kwargs`` (without a config: pad id 1, roberta-base's eps)."""
    if config is None:
        config = {"model_type": "roberta", "pad_token_id": 1, "layer_norm_eps": 1e-5, **sizes_off_weights(flat)}
    return bert_kwargs(flat, config, **overrides)


def distilbert_kwargs(flat: Mapping[str, np.ndarray], config: Mapping[str, Any] = None,
                      **overrides) -> Dict[str, Any]:
    """``create('distilbert', ...)`` kwargs, as ``bert_kwargs`` (a head classifies from ``pre_classifier``)."""
    if config is None:
        sizes = sizes_off_weights(flat)
        config = {"model_type": "distilbert", "vocab_size": sizes["vocab_size"], "dim": sizes["hidden_size"],
                  "n_layers": sizes["num_hidden_layers"], "n_heads": 1, "hidden_dim": sizes["intermediate_size"],
                  "max_position_embeddings": sizes["max_position_embeddings"]}
    return bert_kwargs(flat, config, **overrides)
