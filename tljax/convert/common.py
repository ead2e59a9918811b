"""Shared conversion pieces: array layouts, a small key-rule engine, and strict validation.

A *rule* maps one checkpoint key and its array to ``{tljax path: array}`` (paths start with the
collection: ``params/backbone/conv1/kernel``, ``batch_stats/backbone/bn1/mean``), or returns
None when the key is not its own. Each source module is a list of rules; keys no rule claims
are translated structurally (dots → slashes) so the strict check can name them next to the
nearest expected key.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np

from tljax import models
from tljax.params import check_compatible, flatten, matches_any, unflatten

Rule = Callable[[str, np.ndarray], Optional[Dict[str, np.ndarray]]]
TORCH_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked", "gamma", "beta")


def to_numpy(x: Any) -> np.ndarray:
    """A numpy array from a numpy array or a torch tensor, without importing torch."""
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu()
        return (x.float() if x.is_floating_point() else x).numpy()  # bf16 has no numpy dtype
    return np.asarray(x)


def conv_kernel(w: np.ndarray) -> np.ndarray:
    """torch OIHW → flax HWIO."""
    return np.transpose(w, (2, 3, 1, 0))


def linear_kernel(w: np.ndarray) -> np.ndarray:
    """torch ``Linear.weight`` (out, in) → flax ``Dense.kernel`` (in, out)."""
    return np.transpose(w)


def split_qkv(w: np.ndarray) -> Sequence[np.ndarray]:
    """A fused (3·hidden, …) query/key/value projection → its three parts, in q, k, v order."""
    if w.shape[0] % 3:
        raise ValueError(f"fused qkv projection has {w.shape[0]} rows, not a multiple of 3")
    return np.split(w, 3, axis=0)


def torch_leaf(module: str, leaf: str, x: np.ndarray, kind: str = "auto") -> Dict[str, np.ndarray]:
    """One torch parameter/buffer of a module now at tljax path ``module``.

    ``weight`` is a conv kernel (4-D), a linear kernel (2-D) or a norm scale (1-D), unless
    ``kind='embed'`` (an embedding table, kept as is). BatchNorm running stats go to
    ``batch_stats``; ``num_batches_tracked`` is dropped.
    """
    leaf = {"gamma": "weight", "beta": "bias"}.get(leaf, leaf)  # pre-2020 Hugging Face LayerNorm names
    if leaf == "num_batches_tracked":
        return {}
    if leaf in ("running_mean", "running_var"):
        return {f"batch_stats/{module}/{leaf[8:]}": x}
    if leaf == "bias":
        return {f"params/{module}/bias": x}
    if leaf == "weight":
        if kind == "embed":
            return {f"params/{module}/embedding": x}
        layouts = {4: ("kernel", conv_kernel), 2: ("kernel", linear_kernel), 1: ("scale", lambda a: a)}
        if x.ndim in layouts:
            name, layout = layouts[x.ndim]
            return {f"params/{module}/{name}": layout(x)}
    return {f"params/{module}/{leaf}": x}


def module(pattern: str, target: str, kind: str = "auto") -> Rule:
    """Rule for the torch module whose name fully matches ``pattern``, placed at ``target`` (may use \\1…)."""
    rx = re.compile(rf"(?:{pattern})\.({'|'.join(TORCH_LEAVES)})")

    def rule(key, x):
        m = rx.fullmatch(key)
        return None if m is None else torch_leaf(m.expand(target), m.group(rx.groups), x, kind)

    return rule


def param(pattern: str, target: str, layout: Callable[[np.ndarray], np.ndarray] = lambda a: a) -> Rule:
    """Rule for one whole key (``class_token``) → one tljax path (with collection), via ``layout``."""
    rx = re.compile(pattern)

    def rule(key, x):
        m = rx.fullmatch(key)
        return None if m is None else {m.expand(target): layout(x)}

    return rule


def fused_qkv(pattern: str, target: str) -> Rule:
    """Rule for a fused q/k/v projection; ``pattern``'s last group is ``weight`` or ``bias``.

    ``target`` is the attention module; the parts go to its ``query``, ``key``, ``value``.
    """
    rx = re.compile(pattern)

    def rule(key, x):
        m = rx.fullmatch(key)
        if m is None:
            return None
        base, is_weight = m.expand(target), m.group(rx.groups) == "weight"
        return {f"params/{base}/{name}/{'kernel' if is_weight else 'bias'}": linear_kernel(p) if is_weight else p
                for name, p in zip(("query", "key", "value"), split_qkv(x))}

    return rule


def ignore(pattern: str) -> Rule:
    """Rule dropping keys that carry no weights (buffers such as ``position_ids``)."""
    rx = re.compile(pattern)
    return lambda key, x: {} if rx.fullmatch(key) else None


def unclaimed(key: str, x: np.ndarray) -> Dict[str, np.ndarray]:
    """Structural translation of a key no rule knows, so the strict check can name it."""
    mod, _, leaf = key.rpartition(".")
    if mod and leaf in TORCH_LEAVES:
        return torch_leaf("backbone/" + mod.replace(".", "/"), leaf, x)
    return {"params/backbone/" + key.replace(".", "/"): x}


def apply_rules(arrays: Mapping[str, Any], rules: Iterable[Rule]) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Runs every key through the first rule that claims it: ``(flat tljax dict, path → source key)``."""
    rules = list(rules)
    flat, sources = {}, {}
    for key, value in arrays.items():
        x = to_numpy(value)
        out = next((o for o in (rule(key, x) for rule in rules) if o is not None), None)
        for path, arr in (unclaimed(key, x) if out is None else out).items():
            if path in flat:
                raise ValueError(f"checkpoint keys {sources[path]!r} and {key!r} both map to {path!r}")
            flat[path] = np.ascontiguousarray(arr, np.float32) if np.issubdtype(arr.dtype, np.floating) else arr
            sources[path] = key
    return flat, sources


def expected_shapes(arch: str, num_classes: Optional[int], **model_kwargs) -> Dict[str, jax.ShapeDtypeStruct]:
    """Flat ``{path: ShapeDtypeStruct}`` of ``models.create(arch, num_classes, ...)``, without computing anything."""
    model = models.create(arch, num_classes=num_classes, **model_kwargs)
    return flatten(jax.eval_shape(model.init, jax.random.PRNGKey(0), models.example_input(model)))


def head_size(flat: Mapping[str, Any]) -> Optional[int]:
    kernel = flat.get("params/head/kernel")
    return None if kernel is None else int(np.shape(kernel)[-1])


def validate(flat: Dict[str, np.ndarray], sources: Mapping[str, str], arch: str, what: str,
             optional: Iterable[str] = (), **model_kwargs) -> Dict[str, Any]:
    """Strictly checks ``flat`` against the model and returns the variables dict.

    Source keys matching an ``optional`` pattern (e.g. Hugging Face's pooler) are dropped when the
    model has no place for them. The model is ``create(arch, num_classes=<checkpoint head size>)``.
    """
    expected = expected_shapes(arch, head_size(flat), **model_kwargs)
    optional = tuple(optional)
    flat = {k: v for k, v in flat.items() if k in expected or not matches_any(sources[k], optional)}
    check_compatible(expected, flat, what, sources)
    return unflatten({k: flat[k] for k in expected})  # the model's own key order
