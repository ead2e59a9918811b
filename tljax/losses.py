"""Losses of the train step: what a ``loss_fn(outputs, batch, step) -> (loss, metrics)`` hook returns.

Shared by the default classification objective and the methods (distillation, multi-task,
DANN), which bring their own hooks built from these pieces.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax


def cross_entropy(logits, labels, weights=None):
    """Mean softmax cross-entropy over integer ``labels``; with ``weights``, their weighted mean."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    if weights is None:
        return losses.mean()
    return (losses * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def masked_classification(logits, labels, weights):
    """``(cross-entropy, hits)`` over the examples whose weight is > 0 (e.g. one task's, or the
    labelled domain's, rows of a mixed batch); the others' labels are never read."""
    labels = jnp.where(weights > 0, labels, 0)
    hits = (jnp.argmax(logits, -1) == labels) * weights
    return cross_entropy(logits, labels, weights), hits


def classification_loss(outputs, batch, step):
    """The default ``loss_fn``: cross-entropy on ``label``, and the batch accuracy."""
    loss = cross_entropy(outputs, batch["label"])
    return loss, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(outputs, -1) == batch["label"])}
