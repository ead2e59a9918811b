"""Evaluation: predictions and metrics over a whole split, and for frozen backbones features
computed once, a closed-form ridge read-out and k-fold CV.

With a frozen backbone (and frozen BatchNorm) every epoch recomputes the same features;
computing them once in batched jit and training only the head on them is the same
optimisation problem at a fraction of the cost.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Sequence, Tuple

import jax
import jax.experimental.multihost_utils
import numpy as np
from tqdm import tqdm

from tljax import data
from tljax.metrics import classification_metrics
from tljax.train import devices as D
from tljax.train import step as S


def apply_to_split(fn, variables, split, batch_size: int, mesh, buckets: Sequence[int] = (),
                   desc: str = "eval") -> Tuple[np.ndarray, np.ndarray]:
    """``(outputs, labels)`` of jitted ``fn(variables, batch)`` over a whole split.

    Each process reads its share of every padded batch; outputs are gathered from all
    processes and the padding is dropped.
    """
    out, labels = [], []
    batches = data.pipeline.eval_batches(split, batch_size, jax.process_index(), jax.process_count(), buckets)
    total = -(-data.pipeline.num_examples(split) // batch_size)
    interactive = sys.stderr.isatty() and jax.process_index() == 0  # no bars in log files
    for batch in tqdm(batches, desc=desc, leave=False, total=total, disable=not interactive):
        truth = D.shard_batch({"label": batch["label"], "mask": batch.pop("mask")}, mesh)
        outputs, truth = jax.experimental.multihost_utils.process_allgather(
            (fn(variables, D.shard_batch(batch, mesh)), truth), tiled=True)
        valid = np.asarray(truth["mask"]).astype(bool)
        out.append(np.asarray(outputs)[valid])
        labels.append(np.asarray(truth["label"])[valid])
    return np.concatenate(out), np.concatenate(labels)


def evaluate_split(model, variables, split, batch_size: int, mesh, num_classes: int, preprocess=None,
                   buckets=()) -> Dict[str, Any]:
    """Accuracy, macro P/R/F1, confusion and mean cross-entropy ``loss`` on a whole split
    (inference mode, padding masked out)."""
    forward = jax.jit(lambda v, b: S.eval_step(v, b, model=model, preprocess=preprocess, logits=True))
    logits, labels = apply_to_split(forward, variables, split, batch_size, mesh, buckets)
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(labels)), labels].mean()) if len(labels) else float("nan")
    return {**classification_metrics(labels, logits.argmax(axis=1), num_classes), "loss": loss}


def extract_features(model, variables, split, batch_size: int, mesh, preprocess=None,
                     buckets: Sequence[int] = ()) -> Tuple[np.ndarray, np.ndarray]:
    """``(features, labels)`` of a whole split; ``model`` returns features (``num_classes=None``)."""

    @jax.jit
    def features(v, batch):
        if preprocess is not None:
            batch = preprocess(batch)
        args, kwargs = S.model_inputs(batch)
        return model.apply(v, *args, train=False, **kwargs).astype(np.float32)

    return apply_to_split(features, variables, split, batch_size, mesh, buckets, desc="features")


def ridge_predict(train_x, train_y, test_x, num_classes: int, l2: float = 1.0) -> np.ndarray:
    """Closed-form ridge regression onto ±1 one-hot targets (big_vision's few-shot read-out)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = np.concatenate([(train_x - mean) / std, np.ones((len(train_x), 1))], axis=1).astype(np.float64)
    targets = 2.0 * np.eye(num_classes)[train_y] - 1.0
    reg = l2 * np.eye(x.shape[1])
    reg[-1, -1] = 0.0  # no penalty on the bias
    weights = np.linalg.solve(x.T @ x + reg, x.T @ targets)
    test = np.concatenate([(test_x - mean) / std, np.ones((len(test_x), 1))], axis=1)
    return np.argmax(test @ weights, axis=1)


def cross_validate(x, y, num_classes: int, folds: int, seed: int = 0, l2: float = 1.0) -> Dict[str, float]:
    """k-fold accuracy of the ridge read-out, mean and standard deviation over folds. The folds are
    stratified (scikit-learn's ``StratifiedKFold``), so every fold holds every class."""
    from sklearn.model_selection import StratifiedKFold  # noqa: PLC0415

    if folds < 2:
        raise ValueError(f"cv_folds={folds}: need at least 2 folds")
    smallest = int(np.bincount(y, minlength=num_classes).min())
    if folds > smallest:
        raise ValueError(f"cv_folds={folds} exceeds the {smallest} training examples of the smallest class; "
                         f"use at most --config.cv_folds={max(smallest, 2)}")
    scores = []
    for keep, fold in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        predictions = ridge_predict(x[keep], y[keep], x[fold], num_classes, l2)
        scores.append(float(np.mean(predictions == y[fold])))
    return {"cv_folds": folds, "cv_accuracy_mean": float(np.mean(scores)), "cv_accuracy_std": float(np.std(scores))}
