"""Classification metrics from predictions, in numpy (checked against scikit-learn in tests)."""

from __future__ import annotations

from typing import Dict

import numpy as np


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of examples of class ``i`` predicted as ``j``."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def classification_metrics(labels, predictions, num_classes: int) -> Dict[str, object]:
    """Accuracy, macro precision/recall/F1 (a class never predicted has precision 0) and confusion."""
    c = confusion_matrix(labels, predictions, num_classes)
    true_pos = np.diag(c).astype(np.float64)
    predicted, actual = c.sum(axis=0), c.sum(axis=1)
    precision = np.divide(true_pos, predicted, out=np.zeros_like(true_pos), where=predicted > 0)
    recall = np.divide(true_pos, actual, out=np.zeros_like(true_pos), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(true_pos), where=denom > 0)
    present = actual > 0  # macro averages over the classes present in the labels, like sklearn's labels=
    return {
        "accuracy": float(true_pos.sum() / max(c.sum(), 1)),
        "precision_macro": float(precision[present | (predicted > 0)].mean()),
        "recall_macro": float(recall[present | (predicted > 0)].mean()),
        "f1_macro": float(f1[present | (predicted > 0)].mean()),
        "confusion": c.tolist(),
    }
