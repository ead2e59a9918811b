"""Parameter pytrees as ``/``-joined paths, and the strict merge of loaded weights.

Every rule in tljax (strategies, schedules, ``dont_load``) matches these path strings
with ``re.fullmatch``, e.g. ``backbone/layer3/block1/conv2/kernel``.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Dict, Iterable, Mapping, Optional

import jax
import numpy as np
from flax import traverse_util


def flatten(tree: Mapping) -> Dict[str, Any]:
    """``{'a': {'b': x}}`` -> ``{'a/b': x}``; insertion order follows the tree."""
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(dict(tree)).items()}


def unflatten(flat: Mapping[str, Any]) -> Dict[str, Any]:
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def count(tree) -> int:
    """Number of floats (array elements) in a pytree."""
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def matches_any(path: str, patterns: Iterable[str]) -> bool:
    return any(re.fullmatch(p, path) for p in patterns)


class WeightMismatchError(ValueError):
    """Loaded weights do not fit the model: names every missing, unexpected, mis-shaped key."""


def _nearest(key: str, candidates: Iterable[str]) -> str:
    near = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.5)
    return f" (nearest expected: {near[0]!r})" if near else ""


def check_compatible(expected: Mapping[str, Any], loaded: Mapping[str, Any], what: str = "weights",
                     sources: Optional[Mapping[str, str]] = None) -> None:
    """Raises one error listing every difference between two flat ``{path: array}`` dicts.

    ``sources`` maps a loaded path to the checkpoint's own name for it (a converter's
    provenance), so the message also names the key as it is spelled in the file.
    """
    src = lambda k: f" (from {sources[k]!r})" if sources and k in sources else ""  # noqa: E731
    missing = [k for k in expected if k not in loaded]
    unexpected = [k for k in loaded if k not in expected]
    misshaped = [k for k in expected if k in loaded and np.shape(expected[k]) != np.shape(loaded[k])]
    if not (missing or unexpected or misshaped):
        return
    lines = [f"{what} do not match the model:"]
    lines += [f"  missing key {k!r} {np.shape(expected[k])}" for k in missing]
    lines += [f"  unexpected key {k!r}{src(k)}{_nearest(k, missing or expected)}" for k in unexpected]
    lines += [f"  shape mismatch at {k!r}{src(k)}: model {np.shape(expected[k])}, loaded {np.shape(loaded[k])}"
              for k in misshaped]
    lines.append("Fix the checkpoint or the arch; keys meant to be re-initialised belong in dont_load.")
    raise WeightMismatchError("\n".join(lines))


def merge_pretrained(init: Mapping, loaded: Mapping, dont_load: Iterable[str] = ()) -> Dict[str, Any]:
    """Strictly merges ``loaded`` variables into freshly initialised ``init`` variables.

    Both are variable dicts (``{'params': …, 'batch_stats': …}``). Paths (``params/head/kernel``
    and, for convenience, the path without the collection, ``head/kernel``) that fully match a
    ``dont_load`` pattern keep their initial value and are ignored in ``loaded``. Every other
    key must be present in both with the same shape, else a ``WeightMismatchError`` names it.
    """
    dont_load = tuple(dont_load)
    skip = lambda k: matches_any(k, dont_load) or matches_any(k.split("/", 1)[-1], dont_load)  # noqa: E731
    init_flat, loaded_flat = flatten(init), flatten(loaded)
    for pattern in dont_load:
        if not any(re.fullmatch(pattern, k) or re.fullmatch(pattern, k.split("/", 1)[-1]) for k in init_flat):
            raise WeightMismatchError(f"dont_load pattern {pattern!r} matches no model key; "
                                      f"keys look like {next(iter(init_flat))!r}")
    check_compatible({k: v for k, v in init_flat.items() if not skip(k)},
                     {k: v for k, v in loaded_flat.items() if not skip(k)}, "loaded weights")
    merged = {k: (v if skip(k) else np.asarray(loaded_flat[k], dtype=np.asarray(v).dtype))
              for k, v in init_flat.items()}
    return unflatten(merged)
