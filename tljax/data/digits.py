"""scikit-learn's bundled handwritten digits (1,797 real 8×8 images): the offline demo's data.

The source task is digits 0–4; the target task is digits 5–9 relabelled 0–4, with only
``labels_per_class`` labelled training examples per class and the rest held out.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

Split = Dict[str, np.ndarray]


def load_digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 8, 8, 1)`` float32 in [0, 1] and integer labels."""
    from sklearn.datasets import load_digits  # noqa: PLC0415

    digits = load_digits()
    return (digits.images[..., None] / 16.0).astype(np.float32), digits.target.astype(np.int32)


def select_classes(classes: Sequence[int]) -> Split:
    """Examples of ``classes``, relabelled to ``0 … len(classes)-1`` in the given order."""
    images, labels = load_digits_arrays()
    keep = np.isin(labels, classes)
    remap = {c: i for i, c in enumerate(classes)}
    return {"image": images[keep], "label": np.array([remap[int(y)] for y in labels[keep]], np.int32)}


def split_per_class(data: Split, per_class: int, seed: int) -> Tuple[Split, Split]:
    """``per_class`` random training examples of each class; everything else is the test set."""
    rng = np.random.default_rng(seed)
    train_idx = []
    for c in np.unique(data["label"]):
        idx = np.flatnonzero(data["label"] == c)
        if per_class > len(idx):
            raise ValueError(f"asked for {per_class} labels of class {c} but only {len(idx)} exist")
        train_idx.extend(rng.choice(idx, per_class, replace=False))
    train_mask = np.zeros(len(data["label"]), bool)
    train_mask[np.asarray(train_idx)] = True
    return ({k: v[train_mask] for k, v in data.items()}, {k: v[~train_mask] for k, v in data.items()})


def split_fraction(data: Split, test_fraction: float, seed: int) -> Tuple[Split, Split]:
    order = np.random.default_rng(seed).permutation(len(data["label"]))
    n_test = int(round(len(order) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return {k: v[train] for k, v in data.items()}, {k: v[test] for k, v in data.items()}
