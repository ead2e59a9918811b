"""Freezing strategies: a parameter pytree -> a pytree of group labels.

A strategy is a list of ``(regex, label)`` rules over ``/``-joined parameter paths:
``re.fullmatch``, the first matching rule wins, every parameter must be covered and every
rule must match something. The label ``"frozen"`` means "not differentiated, no optimizer
state"; any other label names a trainable group. Strategies never build optimizers.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Dict, List, Sequence, Tuple

from tljax import params as P

FROZEN = "frozen"
TRAINABLE = "trainable"

Rules = Sequence[Tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class Strategy:
    """What to train and whether to start from the pretrained weights."""

    name: str
    rules: Rules
    load_pretrained: bool = True


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


def trainable_mask(labels):
    """Bool pytree: True where a parameter is trained."""
    return P.unflatten({k: v != FROZEN for k, v in P.flatten(labels).items()})


# --- the registry ---------------------------------------------------------------------------

_REGISTRY: Dict[str, Callable[[str], Strategy]] = {}


def register(name: str):
    """Adds a strategy: ``@register('mine') def mine(arg: str) -> Strategy``.

    ``arg`` is what follows ``name:`` in ``config.strategy`` (empty when absent).
    """

    def add(fn):
        _REGISTRY[name] = fn
        return fn

    return add


def names() -> List[str]:
    return sorted(_REGISTRY)


def get(spec: str) -> Strategy:
    """``'linear_probe'`` or ``'freeze:backbone/layer1/.*'`` -> Strategy."""
    name, _, arg = spec.partition(":")
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {spec!r}; allowed: {names()} (freeze takes a regex: 'freeze:<regex>')")
    return _REGISTRY[name](arg)


@register("scratch")
def scratch(arg: str = "") -> Strategy:
    """Random initialisation, everything trained: the no-transfer baseline."""
    return Strategy("scratch", [(".*", TRAINABLE)], load_pretrained=False)


@register("full_ft")
def full_ft(arg: str = "") -> Strategy:
    return Strategy("full_ft", [(".*", TRAINABLE)])


@register("linear_probe")
def linear_probe(arg: str = "") -> Strategy:
    return Strategy("linear_probe", [("head/.*", TRAINABLE), (".*", FROZEN)])


@register("freeze")
def freeze(regex: str) -> Strategy:
    """Freezes every parameter whose path fully matches ``regex``; trains the rest."""
    if not regex:
        raise ValueError("strategy 'freeze' needs a regex: 'freeze:backbone/(conv1|bn1|layer1)/.*'")
    try:
        re.compile(regex)
    except re.error as e:
        raise ValueError(f"strategy 'freeze:{regex}': bad regex ({e})") from None
    return Strategy(f"freeze:{regex}", [(regex, FROZEN), (".*", TRAINABLE)])
