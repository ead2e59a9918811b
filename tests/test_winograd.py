"""xla_cpu.winograd.conv3x3: XLA's 3×3 convolution, its values and both gradients, by Winograd's
F(2×2, 3×3) for the sizes where that is faster on XLA:CPU, and XLA's own convolution for the rest.
(``xla_cpu.Conv``, the ``nn.Conv`` that uses it: tests/test_xla_cpu_kernels.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from tljax.models.xla_cpu import winograd


def reference(x, kernel, strides=1):
    return lax.conv_general_dilated(x, kernel, (strides, strides), ((1, 1), (1, 1)),
                                    dimension_numbers=winograd.DIMENSIONS, precision=lax.Precision.HIGHEST)


def operands(n, h, w, c, d, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, h, w, c)), dtype)
    kernel = jnp.asarray(rng.standard_normal((3, 3, c, d)) / np.sqrt(9 * c), dtype)
    dy = jnp.asarray(rng.standard_normal((n, h, w, d)), dtype)
    return x, kernel, dy


@pytest.mark.parametrize("shape", [(2, 14, 14, 8, 5), (3, 28, 12, 4, 6), (1, 16, 32, 16, 16),
                                   (2, 13, 15, 4, 6),  # odd sizes: one zero row and column, cropped
                                   (1, 56, 56, 4, 4)])
def test_values_and_both_gradients_equal_the_convolution(shape):
    x, kernel, dy = operands(*shape)
    assert winograd.applies(x, kernel, 1)
    y, vjp = jax.vjp(winograd.conv3x3, x, kernel)
    y_ref, vjp_ref = jax.vjp(reference, x, kernel)
    for got, want in zip((y, *vjp(dy)), (y_ref, *vjp_ref(dy))):
        np.testing.assert_allclose(got, want, atol=2e-6 * float(jnp.max(jnp.abs(want))))
    hlo = jax.jit(winograd.conv3x3).lower(x, kernel).as_text()
    assert "convolution" not in hlo  # the forward really is the 16 dots, not XLA's convolution


@pytest.mark.parametrize("shape,strides,dtype", [
    ((2, 7, 7, 4, 4), 1, jnp.float32),     # small: padded tiles, no faster in ResNet-50's step
    ((1, 64, 64, 4, 4), 1, jnp.float32),   # larger than measured (ResNet-50's largest is 56²)
    ((2, 14, 14, 4, 4), 2, jnp.float32),   # strided
    ((2, 14, 14, 4, 4), 1, jnp.bfloat16),  # bfloat16 transforms would round
])
def test_other_convolutions_stay_xla_own(shape, strides, dtype):
    x, kernel, _ = operands(*shape, dtype=dtype)
    assert not winograd.applies(x, kernel, strides)
    np.testing.assert_array_equal(winograd.conv3x3(x, kernel, strides),
                                  lax.conv_general_dilated(x, kernel, (strides, strides), ((1, 1), (1, 1)),
                                                           dimension_numbers=winograd.DIMENSIONS))
