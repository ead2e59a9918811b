"""The layers models are built from, as one of two interchangeable sets: ``layers(cpu_kernels)``.

``PLAIN`` is Flax's own (``nn.Conv``, ``nn.Dense``, ``nn.BatchNorm``, ``nn.Dropout``, ``nn.max_pool``,
``nn.relu``); ``CPU_KERNELS`` the forms of ``tljax.models.xla_cpu``, with the same call signatures
and parameters, and the same values up to float32 rounding (dropout: other masks). A model has a
field ``cpu_kernels: bool = False`` and picks its set from it; whoever builds the model decides (the
kernels pay off on XLA:CPU only).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import flax.linen as nn

from tljax.models import xla_cpu


class Layers(NamedTuple):
    Conv: Callable  # nn.Conv's fields
    Dense: Callable  # nn.Dense's fields
    BatchNorm: Callable  # nn.BatchNorm's fields; an nn.BatchNorm instance, called with use_running_average=
    Dropout: Callable  # nn.Dropout's rate and deterministic
    max_pool_3x3_s2: Callable  # NHWC → NHWC: torchvision's stem pool (3×3, stride 2, padding 1)
    residual_relu: Callable  # the ReLU ending a residual block


def max_pool_3x3_s2(x):
    return nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))


PLAIN = Layers(nn.Conv, nn.Dense, nn.BatchNorm, nn.Dropout, max_pool_3x3_s2, nn.relu)
CPU_KERNELS = Layers(xla_cpu.Conv, xla_cpu.Dense, xla_cpu.BatchNorm, xla_cpu.Dropout, xla_cpu.max_pool_3x3_s2,
                     xla_cpu.residual_relu)


def layers(cpu_kernels: bool) -> Layers:
    """``CPU_KERNELS`` when ``cpu_kernels``, else ``PLAIN``."""
    return CPU_KERNELS if cpu_kernels else PLAIN
