"""One grain pipeline for every source: deterministic, resumable, sharded per process.

A split is either a dict of equal-length numpy arrays (in-memory sources: digits, tokenised
text) or a random-access object (``len`` + ``[i] -> dict``: TFDS, image folders). The train
stream is grain's seeded per-epoch shuffle of example indices, repeated forever and cut into
*global* batches; each process reads and decodes only its contiguous share of each global
batch. Text batches are cut to a length bucket chosen from the whole global batch, so every
process agrees on the shape. The iterator's ``get_state()`` is a small JSON dict saved with
the checkpoint; ``set_state`` on a fresh iterator continues exactly where it stopped.
"""

from __future__ import annotations

import functools
from typing import Dict, Iterator, Sequence

import grain
import numpy as np

from tljax.data import text

Batch = Dict[str, np.ndarray]


def num_examples(split) -> int:
    return len(next(iter(split.values()))) if isinstance(split, dict) else len(split)


def labels_of(split) -> np.ndarray:
    """Every example's label, reading as little as the split allows (an image folder knows its labels)."""
    if isinstance(split, dict):
        return np.asarray(split["label"])
    if hasattr(split, "labels"):
        return np.asarray(split.labels)
    if hasattr(split, "source") and hasattr(split, "indices"):  # a Subset
        return labels_of(split.source)[split.indices]
    return np.asarray([split[i]["label"] for i in range(len(split))])


def read(split, idx: np.ndarray) -> Batch:
    """Examples ``idx`` of ``split`` stacked into a batch."""
    if isinstance(split, dict):
        return {k: v[idx] for k, v in split.items()}
    examples = [split[int(i)] for i in idx]
    return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}


def local_share(global_idx: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
    """This process's contiguous slice of a global batch."""
    return np.array_split(global_idx, process_count)[process_index]


def read_share(split, process_index: int, process_count: int, buckets: Sequence[int], global_idx) -> Batch:
    """This process's share of the global batch ``global_idx``, token arrays cut to the batch's bucket."""
    global_idx = np.asarray(global_idx)
    batch = read(split, local_share(global_idx, process_index, process_count))
    if buckets and "attention_mask" in batch:
        lengths = read(split, global_idx)["attention_mask"].sum(axis=1) if isinstance(split, dict) else \
            batch["attention_mask"].sum(axis=1)
        batch = text.cut_to(batch, text.bucket_length(lengths, buckets))
    return batch


def train_dataset(split, global_batch_size: int, seed: int, process_index: int = 0, process_count: int = 1,
                  buckets: Sequence[int] = ()) -> grain.MapDataset:
    """Random-access dataset whose element ``s`` is this process's share of global batch ``s``."""
    read_fn = functools.partial(read_share, split, process_index, process_count, tuple(buckets))
    return _batched_order(split, global_batch_size, seed).map(read_fn)


def _batched_order(split, global_batch_size: int, seed: int) -> grain.MapDataset:
    return grain.MapDataset.range(num_examples(split)).shuffle(seed=seed).repeat().batch(global_batch_size)


def batch_example_indices(split, global_batch_size: int, seed: int, s: int) -> np.ndarray:
    """Indices into ``split`` of the examples of global train batch ``s`` (e.g. to report a bad batch)."""
    return np.asarray(_batched_order(split, global_batch_size, seed)[s])


def train_iterator(split, global_batch_size: int, seed: int, process_index: int = 0, process_count: int = 1,
                   buckets: Sequence[int] = (), num_threads: int = 4, prefetch: int = 4,
                   state=None) -> grain.DatasetIterator:
    """Threaded, prefetching iterator over ``train_dataset``; ``state`` is a saved ``get_state()``."""
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(prefetch, num_threads))
    it = iter(train_dataset(split, global_batch_size, seed, process_index, process_count, buckets)
              .to_iter_dataset(options))
    if state:
        it.set_state(state)
    return it


def read_eval(split, global_batch_size: int, process_index: int, process_count: int, buckets, b: int) -> Batch:
    """Global eval batch ``b`` (the last one padded by repeating the final example); ``mask`` 0 on padding."""
    n = num_examples(split)
    idx = np.arange(b * global_batch_size, (b + 1) * global_batch_size)
    valid = local_share(idx < n, process_index, process_count)
    batch = read_share(split, process_index, process_count, buckets, np.minimum(idx, n - 1))
    batch["mask"] = valid.astype(np.float32)
    return batch


def eval_batches(split, global_batch_size: int, process_index: int = 0, process_count: int = 1,
                 buckets: Sequence[int] = (), num_threads: int = 4) -> Iterator[Batch]:
    """The whole split once, in order, as fixed-size batches (decoded by grain's threads)."""
    n_batches = -(-num_examples(split) // global_batch_size)
    read_fn = functools.partial(read_eval, split, global_batch_size, process_index, process_count, tuple(buckets))
    ds = grain.MapDataset.range(n_batches).map(read_fn)
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=num_threads)))
