"""BatchNorm over the last axis whose training-mode backward keeps only its input.

``flax.linen.BatchNorm`` writes ``y = (x - mean) * mul + bias``; autodiff then saves ``x - mean``
for the backward pass, and XLA:CPU materialises it: one extra activation-sized write and read per
BatchNorm layer (53 of them in ResNet-50). Here the backward is written by hand from the saved
input ``x`` and the per-channel ``mean`` and ``1/σ``, as PyTorch's BatchNorm does. Same variables
(``params/scale``, ``params/bias``, ``batch_stats/mean``, ``batch_stats/var``), the same running
statistics update and the same values as ``nn.BatchNorm``; a subclass of it, so code that
matches ``nn.BatchNorm`` instances (the frozen-BatchNorm interceptor) finds it.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def _channel_axes(x):
    return tuple(range(x.ndim - 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def normalize_with_batch_stats(x, scale, bias, epsilon: float):
    """``(y, mean, var)``: ``x`` normalised with its own per-channel statistics (biased variance,
    ``E[x²] - E[x]²`` in float32 as flax's fast variance), then scaled and shifted."""
    return _forward(x, scale, bias, epsilon)[0]


def _forward(x, scale, bias, epsilon):
    x32 = x.astype(jnp.float32)
    axes = _channel_axes(x)
    mean = jnp.mean(x32, axes)
    var = jnp.maximum(jnp.mean(jnp.square(x32), axes) - jnp.square(mean), 0.0)
    inv = lax.rsqrt(var + epsilon)
    y = (x32 - mean) * (scale * inv) + bias
    return (y, mean, var), (x, mean, inv, scale)


def _backward(epsilon, saved, cotangents):
    """``dx = a·dy + b·x + c`` with per-channel ``a, b, c``: one pass over ``dy`` and ``x`` after two
    reductions of them (``Σdy``, ``Σdy·(x - mean)``), so no activation-sized ``x - mean`` is written.

    The barrier on ``mean`` keeps XLA from merging this ``x - mean`` with the forward's (common
    subexpressions): merged, it is computed once in the forward and written out for the backward,
    which is what flax's BatchNorm costs."""
    del epsilon
    x, mean, inv, scale = saved
    dy, dmean, dvar = cotangents
    axes = _channel_axes(x)
    n = x.size // x.shape[-1]
    x32, dy = x.astype(jnp.float32), dy.astype(jnp.float32)
    dbias = jnp.sum(dy, axes)
    dscale = jnp.sum(dy * (x32 - lax.optimization_barrier(mean)), axes) * inv  # Σ dy·x̂
    a = scale * inv
    b = -a * inv * dscale / n + dvar * (2.0 / n)  # the last terms: the statistics' own cotangents
    c = -a * dbias / n - b * mean + dmean / n
    return (a * dy + b * x32 + c).astype(x.dtype), dscale, dbias


normalize_with_batch_stats.defvjp(_forward, _backward)


class BatchNorm(nn.BatchNorm):
    """``nn.BatchNorm`` (same fields, variables and results) whose training-mode backward is the
    one above. Configurations it does not cover (features not on the last axis, no scale or bias,
    ``axis_name``, a mask, the two-pass variance, reduced-precision statistics) take flax's path."""

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        covered = (self.axis in (-1, x.ndim - 1) and self.use_bias and self.use_scale and self.axis_name is None
                   and mask is None and self.use_fast_variance and self.force_float32_reductions)
        if use_running_average or not covered or self.is_initializing():
            return super().__call__(x, use_running_average=use_running_average, mask=mask)
        features = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), features)
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
        scale = self.param("scale", self.scale_init, features, self.param_dtype)
        bias = self.param("bias", self.bias_init, features, self.param_dtype)
        y, mean, var = normalize_with_batch_stats(x, scale, bias, self.epsilon)
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return jnp.asarray(y, self.dtype or jnp.result_type(x, scale, bias))
