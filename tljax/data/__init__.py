"""Data sources -> in-memory splits and deterministic batches.

``load_splits(data_config, seed) -> (train, test, info)`` where splits are dicts of numpy
arrays (``image``/``label``, or ``input_ids``/``attention_mask``/``label``) and ``info`` holds
at least ``num_classes``.
"""

from __future__ import annotations

from tljax.data import batching, digits

SOURCES = ("digits",)


def load_splits(cfg, seed: int):
    if cfg.source == "digits":
        pool = digits.select_classes(tuple(cfg.classes))
        if cfg.get("labels_per_class"):
            train, test = digits.split_per_class(pool, cfg.labels_per_class, seed)
        else:
            train, test = digits.split_fraction(pool, cfg.get("test_fraction", 0.2), seed)
        return train, test, {"num_classes": len(cfg.classes)}
    raise ValueError(f"unknown data.source {cfg.source!r}; allowed: {SOURCES}")


__all__ = ["batching", "digits", "load_splits"]
