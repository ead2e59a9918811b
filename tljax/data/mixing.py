"""Several in-memory splits mixed into one by a sampling ratio (multi-task, domain adaptation).

The grain pipeline shuffles one split; mixing by ratio therefore means building a split in
which part ``i`` fills ``ratio_i`` of the examples (cycled through, each pass in a seeded
order) and is tagged in a ``field`` column. Every batch then holds the parts in that ratio
on average, and resuming, sharding and bucketing work as for any split.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

Split = Dict[str, np.ndarray]


def cycle_indices(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` indices of ``n`` examples: whole seeded permutations, then part of one more."""
    passes = [rng.permutation(n) for _ in range(-(-count // n))] if n else []
    return np.concatenate(passes)[:count] if passes else np.zeros(0, np.int64)


def mix(parts: Sequence[Split], ratios: Sequence[float], seed: int, field: str = "task",
        total: int = 0) -> Split:
    """One split of ``total`` examples (default: all parts' sizes summed) with ``field`` = part index.

    Parts must have the same keys; a ratio of 0 leaves a part out.
    """
    ratios = np.asarray(ratios, np.float64)
    if len(parts) != len(ratios) or ratios.min() < 0 or ratios.sum() <= 0:
        raise ValueError(f"need one non-negative ratio per part (some > 0), got {list(ratios)} for {len(parts)}")
    keys = set(parts[0])
    for i, part in enumerate(parts):
        if set(part) != keys:
            raise ValueError(f"part {i} has fields {sorted(part)}, part 0 has {sorted(keys)}")
    total = total or sum(len(p[next(iter(keys))]) for p in parts)
    counts = np.floor(ratios / ratios.sum() * total).astype(int)
    counts[np.argmax(ratios)] += total - counts.sum()
    rng = np.random.default_rng([seed, 11])
    chosen = [cycle_indices(len(p[next(iter(keys))]), c, rng) for p, c in zip(parts, counts)]
    out = {k: np.concatenate([p[k][idx] for p, idx in zip(parts, chosen)]) for k in keys}
    out[field] = np.concatenate([np.full(len(idx), i, np.int32) for i, idx in enumerate(chosen)])
    return out
