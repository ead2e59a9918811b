"""Model registry: ``create(arch, num_classes=None, **overrides) -> flax.linen.Module``.

Models are pure linen modules; nothing here knows about optimizers, data or checkpoints.
"""

from __future__ import annotations

import difflib
from typing import Callable, Dict, Optional

import flax.linen as nn

from tljax.models.classifier import Classifier
from tljax.models.resnet import RESNETS, ResNet

# arch name -> function(**overrides) returning the backbone module
BACKBONES: Dict[str, Callable[..., nn.Module]] = {
    name: (lambda spec: (lambda **kw: ResNet(**{**spec, **kw})))(spec) for name, spec in RESNETS.items()
}


def register(name: str):
    """Decorator adding a backbone factory under ``name`` (for users' own architectures)."""

    def add(factory):
        BACKBONES[name] = factory
        return factory

    return add


def create(arch: str, num_classes: Optional[int] = None, head_zero_init: bool = False, **overrides) -> nn.Module:
    """Builds ``arch`` with a ``num_classes``-way head, or pooled features when None."""
    if arch not in BACKBONES:
        near = difflib.get_close_matches(arch, BACKBONES, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(BACKBONES)}.{hint}")
    return Classifier(BACKBONES[arch](**overrides), num_classes=num_classes, head_zero_init=head_zero_init)
