"""Tokenization with the ``tokenizers`` library and padding to a few length buckets.

Sentences are tokenised once, on the host, into ``max_len``-wide arrays padded with the
tokenizer's own pad id (``[PAD]`` 0 for BERT, ``<pad>`` 1 for RoBERTa / XLM-R: RoBERTa's positions
depend on it); each batch is then cut to the smallest bucket that holds its longest sentence.
A handful of buckets means a handful of compiled train steps instead of one per length, and
short batches cost less.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>")  # looked up when no file names the pad token


def _configured_pad_token(folder: str) -> Optional[str]:
    """The pad token ``tokenizer_config.json`` / ``special_tokens_map.json`` beside the tokenizer name, if any."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        file = os.path.join(folder, name)
        try:
            with open(file, encoding="utf-8") as f:
                pad = json.load(f).get("pad_token")
        except (OSError, ValueError, AttributeError):
            continue
        pad = pad.get("content") if isinstance(pad, dict) else pad  # older files store an AddedToken dict
        if isinstance(pad, str):
            return pad
    return None


def pad_token(tokenizer, folder: str) -> Tuple[int, str]:
    """``(id, token)`` to pad with: the file's padding, else the folder's configured pad token, else a
    known one (``[PAD]``, ``<pad>``) in the vocabulary, else id 0."""
    if tokenizer.padding:
        return int(tokenizer.padding["pad_id"]), tokenizer.padding["pad_token"]
    for token in (_configured_pad_token(folder), *PAD_TOKENS):
        if token is not None and tokenizer.token_to_id(token) is not None:
            return int(tokenizer.token_to_id(token)), token
    return 0, tokenizer.id_to_token(0) or "[PAD]"


def load_tokenizer(path: str, max_len: int):
    """A ``tokenizers.Tokenizer`` from ``tokenizer.json`` (or a folder holding one), truncating to ``max_len``
    (special tokens included) and padding on the right with its pad id (``pad_token``; kept in the
    tokenizer, so a saved copy pads the same)."""
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
    pad_id, token = pad_token(tokenizer, os.path.dirname(file))
    # To the longest of each encode_batch call, not the file's fixed length; tokenize pads to max_len.
    tokenizer.enable_padding(direction="right", pad_id=pad_id, pad_type_id=0, pad_token=token)
    tokenizer.enable_truncation(max_length=max_len)
    return tokenizer


def default_buckets(max_len: int) -> Tuple[int, ...]:
    """``max_len/4, max_len/2, max_len`` (at least 8 tokens each)."""
    return tuple(sorted({max(8, max_len // 4), max(8, max_len // 2), max_len}))


def tokenize(tokenizer, texts: Sequence[str], max_len: int, chunk: int = 4096, desc: str = "tokenize"
             ) -> Dict[str, np.ndarray]:
    """``input_ids``/``attention_mask``/``token_type_ids`` int32 arrays of width ``max_len``: ids padded with
    the tokenizer's pad id (``load_tokenizer`` sets it; 0 for a tokenizer without padding), the rest with 0."""
    out = {k: np.zeros((len(texts), max_len), np.int32) for k in TEXT_KEYS}
    out["input_ids"][:] = (tokenizer.padding or {}).get("pad_id", 0)
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
