"""Freezing strategies: a parameter pytree -> a pytree of group labels (plus a few knobs).

A strategy's core is a list of ``(regex, label)`` rules over ``/``-joined parameter paths:
``re.fullmatch``, the first matching rule wins, every parameter must be covered and every
rule must match something. The label ``"frozen"`` means "not differentiated, no optimizer
state"; any other label names a trainable group. Strategies never build optimizers: the
optional knobs (learning-rate multipliers, start epochs, L2-SP, LoRA) are read by
``tljax.optim`` and the loop.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from tljax import params as P

FROZEN = "frozen"
TRAINABLE = "trainable"

Rules = Sequence[Tuple[str, object]]
RulesOrFn = Union[Rules, Callable[[List[str]], Rules]]


@dataclasses.dataclass(frozen=True)
class Strategy:
    """What to train, how fast, from when, and whether to start from the pretrained weights.

    Rule lists may be functions of the parameter paths (for layout-aware strategies).
    ``start_epochs``: ``[(regex, epoch)]``, a group trains only from that epoch on (ULMFiT);
    ``lp_fraction``: the head alone trains for this fraction of the steps (LP-FT).
    """

    name: str
    rules: RulesOrFn
    load_pretrained: bool = True
    lr_mults: RulesOrFn = ()
    start_epochs: RulesOrFn = ()
    lp_fraction: float = 0.0
    l2sp: Optional[Tuple[float, float]] = None  # (alpha on pretrained weights, beta on the head)
    lora: Optional[Dict[str, object]] = None  # dict(rank=, alpha=, targets=regex)

    def resolve(self, field: str, paths: List[str]) -> Rules:
        value = getattr(self, field)
        return list(value(paths) if callable(value) else value)


def labels_from_rules(params, rules: Rules):
    """Returns a label pytree shaped like ``params``; errors name uncovered paths and idle rules."""
    paths = list(P.flatten(params))
    compiled = [(re.compile(pattern), label) for pattern, label in rules]
    labels, used = {}, set()
    for path in paths:
        for i, (regex, label) in enumerate(compiled):
            if regex.fullmatch(path):
                labels[path] = label
                used.add(i)
                break
    uncovered = [p for p in paths if p not in labels]
    if uncovered:
        raise ValueError(f"{len(uncovered)} parameters match no rule, e.g. {uncovered[:5]}; "
                         "add a rule such as ('.*', 'frozen') at the end")
    idle = [rules[i][0] for i in range(len(rules)) if i not in used]
    if idle:
        raise ValueError(f"rules {idle} match no parameter (an earlier rule may take them first); "
                         f"paths look like {paths[:3]}")
    return P.unflatten(labels)


def labels_for(strategy: Strategy, params):
    return labels_from_rules(params, strategy.resolve("rules", list(P.flatten(params))))


def trainable_mask(labels):
    """Bool pytree: True where a parameter is trained."""
    return P.unflatten({k: v != FROZEN for k, v in P.flatten(labels).items()})


# --- the registry ---------------------------------------------------------------------------

_REGISTRY: Dict[str, Callable[[str], Strategy]] = {}


def register(name: str):
    """Adds a strategy in one function: ``@register('mine') def mine(arg: str) -> Strategy``.

    ``arg`` is what follows ``name:`` in ``config.strategy`` (empty when absent).
    """

    def add(fn):
        _REGISTRY[name] = fn
        return fn

    return add


def names() -> List[str]:
    return sorted(_REGISTRY)


def get(spec: str) -> Strategy:
    """``'linear_probe'`` or ``'freeze:backbone/layer1/.*'`` or ``'llrd:0.7'`` -> Strategy."""
    name, _, arg = spec.partition(":")
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {spec!r}; allowed: {names()} "
                         "(some take an argument: 'freeze:<regex>', 'freeze_first_k:2', 'llrd:0.7', "
                         "'gradual_unfreeze:1', 'lp_ft:0.5', 'lora:8', 'l2sp:0.01,0.01')")
    return _REGISTRY[name](arg)


def number(spec: str, arg: str, default, kind=float):
    """Parses a strategy argument, with an error that says what was expected."""
    if arg == "":
        return default
    try:
        return kind(arg)
    except ValueError:
        raise ValueError(f"strategy {spec!r}: expected {'an integer' if kind is int else 'a number'} after ':', "
                         f"got {arg!r}") from None


from tljax.strategies import builtin  # noqa: E402,F401  (registers the built-in strategies)
