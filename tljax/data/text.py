"""Tokenization with the ``tokenizers`` library and padding to a few length buckets.

Sentences are tokenised once, on the host, into ``max_len``-wide arrays; each batch is then
cut to the smallest bucket that holds its longest sentence. A handful of buckets means a
handful of compiled train steps instead of one per length, and short batches cost less.
"""

from __future__ import annotations

import os
from typing import Dict, Sequence, Tuple

import numpy as np
from tqdm import tqdm

TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def load_tokenizer(path: str, max_len: int):
    """A ``tokenizers.Tokenizer`` from ``tokenizer.json`` (or a folder holding one), truncating to ``max_len``."""
    from tokenizers import Tokenizer  # noqa: PLC0415 (optional at import time)

    file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise FileNotFoundError(f"tokenizer {file!r} not found; set data.tokenizer to a tokenizer.json "
                                "or the folder of a Hugging Face model")
    try:
        tokenizer = Tokenizer.from_file(file)
    except Exception as err:  # noqa: BLE001 (the Rust library raises a bare Exception)
        raise ValueError(f"{file}: not a tokenizer file the `tokenizers` library can read ({err}); expected the "
                         "tokenizer.json a Hugging Face fast tokenizer saves (save_pretrained)") from err
    tokenizer.no_padding()  # padding is ours: to the batch's bucket, not the file's fixed length
    tokenizer.enable_truncation(max_length=max_len)
    return tokenizer


def default_buckets(max_len: int) -> Tuple[int, ...]:
    """``max_len/4, max_len/2, max_len`` (at least 8 tokens each)."""
    return tuple(sorted({max(8, max_len // 4), max(8, max_len // 2), max_len}))


def tokenize(tokenizer, texts: Sequence[str], max_len: int, chunk: int = 4096, desc: str = "tokenize"
             ) -> Dict[str, np.ndarray]:
    """``input_ids``/``attention_mask``/``token_type_ids`` int32 arrays of width ``max_len`` (zero padded)."""
    out = {k: np.zeros((len(texts), max_len), np.int32) for k in TEXT_KEYS}
    with tqdm(total=len(texts), desc=desc, leave=False, disable=len(texts) < chunk) as bar:
        for start in range(0, len(texts), chunk):
            for row, enc in enumerate(tokenizer.encode_batch(list(texts[start:start + chunk])), start):
                n = len(enc.ids)
                out["input_ids"][row, :n] = enc.ids
                out["attention_mask"][row, :n] = enc.attention_mask
                out["token_type_ids"][row, :n] = enc.type_ids
            bar.update(min(chunk, len(texts) - start))
    return out


def bucket_length(lengths: np.ndarray, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds the longest of ``lengths`` (the largest bucket otherwise)."""
    longest = int(np.max(lengths)) if len(lengths) else 0
    return next((b for b in sorted(buckets) if b >= longest), max(buckets))


def cut_to(batch: Dict[str, np.ndarray], length: int) -> Dict[str, np.ndarray]:
    """The batch with its token arrays cut to ``length`` columns."""
    return {k: (v[:, :length] if k in TEXT_KEYS else v) for k, v in batch.items()}
