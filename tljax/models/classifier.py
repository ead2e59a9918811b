"""A backbone plus an optional linear head: the one shape every tljax model has.

Parameter paths always start with ``backbone/`` or ``head/``, so strategies
(``head/.*`` trainable) and weight loading (``dont_load=('head/.*',)``) read the same
for every architecture.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn


class Classifier(nn.Module):
    backbone: nn.Module
    num_classes: Optional[int] = None  # None: return the backbone's features
    head_zero_init: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False, **kwargs: Any):
        features = self.backbone(x, train=train, **kwargs)
        if self.num_classes is None:
            return features
        kernel_init = nn.initializers.zeros if self.head_zero_init else nn.initializers.lecun_normal()
        return nn.Dense(self.num_classes, kernel_init=kernel_init, name="head")(features)


class Identity(nn.Module):
    """A parameter-free backbone: the head alone, trained on cached features."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return x
