"""Data sources -> splits -> one grain pipeline (``tljax.data.pipeline``).

``load_splits(data_config, seed) -> (train, test, info)``; ``info["val"]`` is the validation
split (``data.val_fraction``, ``val_split`` or ``val_path``) or None. A split is a dict of numpy arrays
(``image``/``label``, or ``input_ids``/``attention_mask``/``token_type_ids``/``label``) or a
random-access object of such examples. ``info`` holds ``num_classes``, ``label_names``,
``skipped_examples``, ``train_examples``/``test_examples`` (read) and, for text, ``buckets``.

``data.source`` is one of ``digits``, ``tfds:<name>``, ``image_folder``, ``text_tsv``,
``text_csv``; ``data.train_examples`` (0 = all) keeps a seeded random subset of training.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from tljax.data import augment, digits, pipeline, text
from tljax.defaults import data_config

SOURCES = ("digits", "tfds:<name>", "image_folder", "text_tsv", "text_csv")


class Subset:
    """Examples ``indices`` of a random-access source."""

    def __init__(self, source, indices):
        self.source, self.indices = source, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.source[int(self.indices[i])]


def subset_indices(n: int, keep: int, seed: int) -> np.ndarray:
    """A seeded random choice of ``keep`` of ``n`` indices, in file order (all when ``keep`` is 0)."""
    if not keep or keep >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 7]).choice(n, keep, replace=False))


def take(split, indices):
    if isinstance(split, dict):
        return {k: v[indices] for k, v in split.items()}
    return Subset(split, indices) if len(indices) < len(split) else split


def _digits(cfg, seed):
    pool = digits.select_classes(tuple(cfg.classes))
    if cfg.labels_per_class:
        train, test = digits.split_per_class(pool, cfg.labels_per_class, seed)
    else:
        train, test = digits.split_fraction(pool, cfg.test_fraction, seed)
    return train, test, {"num_classes": len(cfg.classes), "label_names": [str(c) for c in cfg.classes]}


def _tfds(cfg, seed):
    from tljax.data import tfds_source  # noqa: PLC0415

    name = cfg.source.split(":", 1)[1]
    kw = dict(data_dir=cfg.data_dir or None, image_key=cfg.image_key, label_key=cfg.label_key, download=cfg.download)
    train, info = tfds_source.load(name, cfg.train_split, **kw)
    test, _ = tfds_source.load(name, cfg.test_split or "test", **kw)
    info["val"] = tfds_source.load(name, cfg.val_split, **kw)[0] if cfg.val_split else None
    return train, test, info


def _image_folder(cfg, seed):
    import os  # noqa: PLC0415

    from tljax.data import image_folder  # noqa: PLC0415

    size = int(cfg.image_size)
    train, info = image_folder.load(os.path.join(cfg.path, cfg.train_split), size)
    test, test_info = image_folder.load(os.path.join(cfg.path, cfg.test_split or "val"), size,
                                        class_names=info["label_names"])
    skipped = info["skipped_paths"] + test_info["skipped_paths"]
    val = None
    if cfg.val_split:
        val, val_info = image_folder.load(os.path.join(cfg.path, cfg.val_split), size, class_names=info["label_names"])
        skipped += val_info["skipped_paths"]
    return train, test, {"num_classes": len(info["label_names"]), "label_names": info["label_names"],
                         "skipped_examples": len(skipped), "skipped_paths": skipped, "val": val}


def _text(cfg, seed):
    from tljax.data import text_files  # noqa: PLC0415

    delimiter = "\t" if cfg.source == "text_tsv" else ","
    cols = (cfg.text_column, cfg.label_column, cfg.has_header)
    test_path = cfg.test_path or cfg.eval_path
    if not cfg.train_path or not test_path:
        raise ValueError(f"data.source={cfg.source!r} needs data.train_path and data.test_path (or eval_path)")
    texts, labels, lines = text_files.read_rows(cfg.train_path, delimiter, *cols)
    names = tuple(cfg.label_names) or text_files.infer_label_names(labels, cfg.train_path, lines)
    keep = subset_indices(len(texts), cfg.train_examples, seed)
    ids = text_files.label_ids(labels, names, cfg.train_path, lines)
    test_texts, test_labels, test_lines = text_files.read_rows(test_path, delimiter, *cols)
    test_ids = text_files.label_ids(test_labels, names, test_path, test_lines)
    tokenizer = text.load_tokenizer(cfg.tokenizer, cfg.max_len)
    train = text.tokenize(tokenizer, [texts[i] for i in keep], cfg.max_len, desc="tokenize train")
    train["label"] = np.asarray(ids, np.int32)[keep]
    test = text.tokenize(tokenizer, test_texts, cfg.max_len, desc="tokenize test")
    test["label"] = np.asarray(test_ids, np.int32)
    val = None
    if cfg.val_path:
        val_texts, val_labels, val_lines = text_files.read_rows(cfg.val_path, delimiter, *cols)
        val = text.tokenize(tokenizer, val_texts, cfg.max_len, desc="tokenize validation")
        val["label"] = np.asarray(text_files.label_ids(val_labels, names, cfg.val_path, val_lines), np.int32)
    buckets = tuple(cfg.buckets) or text.default_buckets(cfg.max_len)
    return train, test, {"num_classes": len(names), "label_names": list(names), "buckets": buckets,
                         "rows_in_train_file": len(texts), "val": val}


def load_splits(cfg, seed: int) -> Tuple[Any, Any, Dict[str, Any]]:
    """``(train, test, info)`` of a data section; fields it leaves out take ``tljax.defaults``'."""
    cfg = data_config(cfg)
    if cfg.source == "digits":
        loader = _digits
    elif cfg.source.startswith("tfds:"):
        loader = _tfds
    elif cfg.source == "image_folder":
        loader = _image_folder
    elif cfg.source in ("text_tsv", "text_csv"):
        loader = _text
    else:
        raise ValueError(f"unknown data.source {cfg.source!r}; allowed: {SOURCES}")
    train, test, info = loader(cfg, seed)
    if cfg.source not in ("text_tsv", "text_csv"):  # text subsets before tokenising
        train = take(train, subset_indices(pipeline.num_examples(train), cfg.train_examples, seed))
    info.setdefault("val", None)
    if cfg.val_fraction:
        if info["val"] is not None:
            raise ValueError("set one of data.val_fraction, data.val_split and data.val_path, not several")
        train, info["val"] = stratified_split(train, cfg.val_fraction, seed, info.get("label_names"))
    if info["num_classes"] < 2:
        raise ValueError(f"data.source={cfg.source!r} has {info['num_classes']} class ({info.get('label_names')}); "
                         "a classifier needs at least two: check the data path, data.classes or the label column")
    info.setdefault("skipped_examples", 0)
    info["train_examples"] = pipeline.num_examples(train)
    info["test_examples"] = pipeline.num_examples(test)
    info["val_examples"] = pipeline.num_examples(info["val"]) if info["val"] is not None else 0
    return train, test, info


def stratified_split(split, fraction: float, seed: int, label_names=None):
    """``(train, validation)``: a seeded ``fraction`` of each class's examples held out, so the
    validation split has every class in the training split's proportions."""
    labels = pipeline.labels_of(split)
    rng = np.random.default_rng([seed, 11])
    held = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(fraction * len(members)))
        if n < 1 or n >= len(members):
            name = label_names[c] if label_names is not None and c < len(label_names) else c
            raise ValueError(f"data.val_fraction={fraction} leaves class {name!r} ({len(members)} training examples) "
                             f"with {'no validation' if n < 1 else 'no training'} examples; raise or lower "
                             "data.val_fraction, or give data.val_split / data.val_path")
        held.append(members[:n])
    val_idx = np.sort(np.concatenate(held))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return take(split, train_idx), take(split, val_idx)


__all__ = ["augment", "digits", "pipeline", "text", "load_splits", "SOURCES"]
