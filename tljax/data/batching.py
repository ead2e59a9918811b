"""Deterministic batches from in-memory arrays, addressed by step.

Batch ``s`` is a pure function of ``(seed, s)``: the stream is one seeded permutation per
epoch, concatenated. A resumed run therefore sees exactly the batches an uninterrupted run
would, and each process takes its own contiguous slice of every global batch.
"""

from __future__ import annotations

import functools
from typing import Dict, Iterator

import numpy as np


@functools.lru_cache(maxsize=8)
def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = np.divmod(positions, n)
    return np.array([_epoch_order(n, seed, int(e))[o] for e, o in zip(epochs, offsets)])


def train_batch(data: Dict[str, np.ndarray], global_batch_size: int, step: int, seed: int,
                process_index: int = 0, process_count: int = 1) -> Dict[str, np.ndarray]:
    """This process's share of global batch ``step``."""
    n = len(next(iter(data.values())))
    idx = batch_indices(n, global_batch_size, step, seed)
    local = np.array_split(idx, process_count)[process_index]
    return {k: v[local] for k, v in data.items()}


def eval_batches(data: Dict[str, np.ndarray], batch_size: int) -> Iterator[Dict[str, np.ndarray]]:
    """Fixed-size batches in order; the last is padded, with ``mask`` 0 on the padding."""
    n = len(next(iter(data.values())))
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        valid = idx < n
        idx = np.where(valid, idx, n - 1)
        batch = {k: v[idx] for k, v in data.items()}
        batch["mask"] = valid.astype(np.float32)
        yield batch
