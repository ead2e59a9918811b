"""xla_cpu.BatchNorm equals flax's in values, gradients and running statistics, with its own backward."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax.models.xla_cpu.batchnorm import BatchNorm
from tljax.train import step as S

SETTINGS = dict(momentum=0.9, epsilon=1e-5)


def perturbed_variables(x, **fields):
    variables = nn.BatchNorm(**SETTINGS, **fields).init(jax.random.key(1), x, use_running_average=False)
    return jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(2), a.shape, a.dtype), variables)


def loss_and_stats(module, variables, x, **kwargs):
    """A loss that weights every output differently, and the updated running statistics."""
    y, updates = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"], **kwargs)
    weights = jnp.arange(y.size, dtype=jnp.float32).reshape(y.shape) / y.size
    return jnp.sum(jnp.sin(y.astype(jnp.float32)) * weights), (y, updates["batch_stats"])


@pytest.mark.parametrize("shape", [(8, 5, 5, 6), (32, 7)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_values_gradients_and_running_stats_equal_flax_batchnorm(shape, dtype):
    x = (jax.random.normal(jax.random.key(0), shape) * 3 + 1).astype(dtype)
    variables = perturbed_variables(x)
    grad = lambda m: jax.value_and_grad(lambda v, x: loss_and_stats(m, v, x), (0, 1), has_aux=True)  # noqa: E731
    (loss, (y, stats)), (dv, dx) = grad(BatchNorm(**SETTINGS, dtype=dtype))(variables, x)
    (loss_ref, (y_ref, stats_ref)), (dv_ref, dx_ref) = grad(nn.BatchNorm(**SETTINGS, dtype=dtype))(variables, x)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    assert y.dtype == y_ref.dtype == dtype
    np.testing.assert_allclose(np.float32(y), np.float32(y_ref), atol=tol)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.float32(a), np.float32(b), atol=tol, rtol=tol),
                 (dv["params"], dx, stats), (dv_ref["params"], dx_ref, stats_ref))


def test_gradients_through_the_batch_statistics_equal_flax():
    x = jax.random.normal(jax.random.key(0), (16, 3, 4)) * 2 - 1
    variables = perturbed_variables(x)

    def through_stats(module, x):
        y, stats = loss_and_stats(module, variables, x)[1]
        return jnp.sum(stats["mean"] * 3 + stats["var"] ** 2) + 0.01 * jnp.sum(y ** 2)

    np.testing.assert_allclose(jax.grad(lambda x: through_stats(BatchNorm(**SETTINGS), x))(x),
                               jax.grad(lambda x: through_stats(nn.BatchNorm(**SETTINGS), x))(x), atol=1e-6)


def test_training_backward_keeps_only_the_input_not_x_minus_mean():
    """The point of the module: the residuals of its backward hold one activation-sized array."""
    x = jax.random.normal(jax.random.key(0), (4, 3, 3, 8))
    variables = perturbed_variables(x)

    def activation_sized_residuals(module):
        _, backward = jax.vjp(lambda x: module.apply(variables, x, use_running_average=False,
                                                     mutable=["batch_stats"])[0], x)
        return sum(leaf.shape == x.shape for leaf in jax.tree.leaves(backward))

    assert activation_sized_residuals(BatchNorm(**SETTINGS)) == 1
    assert activation_sized_residuals(nn.BatchNorm(**SETTINGS)) > 1


def test_compiled_backward_plans_two_fewer_activation_buffers_than_flax():
    """XLA's plan for conv-like → BatchNorm → ReLU → conv-like: flax's keeps ``x - mean`` for the
    backward; ours neither keeps it nor lets XLA share the forward's ``x - mean`` with the backward's
    reduction (which would write it out again)."""
    x = jax.random.normal(jax.random.key(0), (16, 28, 28, 64))
    w = jax.random.normal(jax.random.key(1), (64, 64)) / 8

    def temp_activations(module):
        variables = module.init(jax.random.key(2), x, use_running_average=False)

        def loss(x, w):
            y = module.apply(variables, x @ w, use_running_average=False, mutable=["batch_stats"])[0]
            return jnp.sum(nn.relu(y) @ w)

        compiled = jax.jit(jax.grad(loss, (0, 1))).lower(x, w).compile()
        return compiled.memory_analysis().temp_size_in_bytes / x.nbytes

    assert temp_activations(BatchNorm(**SETTINGS)) <= temp_activations(nn.BatchNorm(**SETTINGS)) - 2 + 0.01


@pytest.mark.parametrize("fields, kwargs", [(dict(axis=1), {}), (dict(use_scale=False), {}),
                                            (dict(use_fast_variance=False), {}),
                                            ({}, dict(mask=jnp.arange(16).reshape(16, 1) % 3 > 0))])
def test_configurations_it_does_not_cover_take_flax_path_with_flax_results(fields, kwargs):
    x = jax.random.normal(jax.random.key(0), (16, 6)) + 2
    variables = perturbed_variables(x, **fields)
    grad = lambda m: jax.grad(lambda x: loss_and_stats(m, variables, x, **kwargs)[0])  # noqa: E731
    assert "custom_vjp_call" not in str(jax.make_jaxpr(grad(BatchNorm(**SETTINGS, **fields)))(x))
    np.testing.assert_allclose(grad(BatchNorm(**SETTINGS, **fields))(x), grad(nn.BatchNorm(**SETTINGS, **fields))(x),
                               atol=1e-6)


def test_frozen_batchnorm_interceptor_puts_it_in_inference_mode():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return BatchNorm(**SETTINGS, name="bn")(x, use_running_average=False)

    x = jax.random.normal(jax.random.key(0), (8, 4)) + 5
    variables = Net().init(jax.random.key(1), x)
    with S.batchnorm_in_inference_mode(frozenset({"bn"})):
        y, updates = Net().apply(variables, x, mutable=["batch_stats"])
    np.testing.assert_allclose(updates["batch_stats"]["bn"]["mean"], variables["batch_stats"]["bn"]["mean"])
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-5), atol=1e-6)  # fresh statistics: mean 0, var 1
