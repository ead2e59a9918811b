"""VGG-16 (with or without BatchNorm) to torchvision's conventions.

Layers are named by position (``conv3_2``, ``bn3_2``, ``fc6``, ``fc7``), the names Keras
(``block3_conv2``, ``fc1``) and torchvision (``features.N``) both map to. Features are the
4096-wide ``fc7`` output; the 1000-way ``fc8`` is the Classifier's ``head``. Like torchvision,
the last feature map is average-pooled to 7×7 (identity at 224²) and flattened in NHWC order.
``cpu_kernels`` takes the XLA:CPU forms of BatchNorm and Dropout (``tljax.models.layers``).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from tljax.models.layers import layers

VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

# torchvision's VGG initialisation.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
dense_init = nn.initializers.normal(0.01)


def adaptive_pool_matrix(size: int, out: int) -> np.ndarray:
    """``(out, size)`` averaging weights of torch's AdaptiveAvgPool along one axis."""
    m = np.zeros((out, size), np.float32)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x, out: int):
    """torch's ``AdaptiveAvgPool2d(out)`` on NHWC; exact identity when the map is already out×out."""
    if x.shape[1] == out and x.shape[2] == out:
        return x
    ph, pw = adaptive_pool_matrix(x.shape[1], out), adaptive_pool_matrix(x.shape[2], out)
    return jnp.einsum("nhwc,ih,jw->nijc", x, ph.astype(x.dtype), pw.astype(x.dtype))


class VGG(nn.Module):
    """Backbone only: returns the ``fc7`` features ``(batch, fc_width)``."""

    stages: Sequence[Sequence[int]] = VGG16_STAGES
    batch_norm: bool = False
    fc_width: int = 4096
    pool_size: int = 7
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    cpu_kernels: bool = False  # the XLA:CPU forms of BatchNorm and Dropout (tljax.models.xla_cpu)

    @nn.compact
    def __call__(self, x, train: bool = False):
        L = layers(self.cpu_kernels)
        x = x.astype(self.dtype)
        for b, widths in enumerate(self.stages, 1):
            for i, width in enumerate(widths, 1):
                x = nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), kernel_init=conv_init,
                            dtype=self.dtype, name=f"conv{b}_{i}")(x)
                if self.batch_norm:
                    x = L.BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                                    name=f"bn{b}_{i}")(x, use_running_average=not train)
                x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), (2, 2))
        x = adaptive_avg_pool(x, self.pool_size)
        x = x.reshape(x.shape[0], -1)
        for name in ("fc6", "fc7"):
            x = nn.relu(nn.Dense(self.fc_width, kernel_init=dense_init, dtype=self.dtype, name=name)(x))
            x = L.Dropout(self.dropout_rate)(x, deterministic=not train)
        return x.astype(jnp.float32)


VGGS = {
    "vgg16": dict(batch_norm=False),
    "vgg16_bn": dict(batch_norm=True),
}
