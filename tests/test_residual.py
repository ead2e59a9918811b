"""xla_cpu.residual_relu: the values and gradients of ReLU, and (on XLA:CPU) a chain of residual blocks
that the compiler no longer recomputes from its start."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax.models import resnet
from tljax.models.layers import CPU_KERNELS
from tljax.models.xla_cpu.residual import residual_relu, store


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_values_and_gradients_equal_relu_exactly(dtype):
    z = jnp.array([[-2.0, -0.0, 0.0, 1e-30, 0.5, 3.0, jnp.inf, -jnp.inf]], dtype)
    weights = jnp.arange(1, z.size + 1, dtype=dtype).reshape(z.shape)
    loss = lambda relu: lambda z: jnp.sum(jnp.where(jnp.isfinite(z), relu(z), 0) * weights)  # noqa: E731
    np.testing.assert_array_equal(residual_relu(z), nn.relu(z))
    np.testing.assert_array_equal(jax.grad(loss(residual_relu))(z), jax.grad(loss(nn.relu))(z))
    assert residual_relu(z).dtype == dtype
    assert np.isnan(residual_relu(jnp.array([jnp.nan], dtype))[0])
    np.testing.assert_array_equal(store(z), z)


def chain_of_blocks(relu, depth=6):
    """``x ← relu(x·w + x)``, ``depth`` times: the shape of a ResNet stage without its BatchNorms."""
    def loss(ws, x):
        for w in ws:
            x = relu(x @ w * 0.5 + 0.1 + x)
        return jnp.sum(x ** 2)
    return loss, [jnp.full((64, 64), 0.01 * (i + 1)) for i in range(depth)], jnp.ones((512, 64))


def most_activations_read_by_one_fusion(relu):
    loss, ws, x = chain_of_blocks(relu)
    hlo = jax.jit(jax.grad(loss, (0, 1))).lower(ws, x).compile().as_text()
    entry, shapes, most = hlo[hlo.index("\nENTRY"):], {}, 0
    for name, shape, op, operands in re.findall(r"%([\w.\-]+) = (\S+) ([\w\-]+)\((.*)\)", entry):
        shapes[name] = shape
        if op == "fusion":
            names = re.findall(r"%([\w.\-]+)", operands)
            most = max(most, sum(shapes.get(n, "").startswith("f32[512,64]") for n in names))
    return most


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the recomputation it prevents is XLA:CPU's")
def test_xla_cpu_no_longer_rederives_each_block_from_the_chain_start():
    """With nn.relu, XLA:CPU's backward fusions read the outputs of every earlier block (8 arrays for
    6 blocks); with residual_relu each reads at most its own block's inputs (gradient, dot output,
    the block output for the mask). Fails if a jaxlib starts folding the hidden 1 away."""
    plain, stored = most_activations_read_by_one_fusion(nn.relu), most_activations_read_by_one_fusion(residual_relu)
    assert plain >= 6, f"the recomputation this guards against is gone (plain ReLU reads {plain})"
    assert stored <= 4, f"a fusion reads {stored} activation-sized arrays: the block outputs are recomputed"
    loss, ws, x = chain_of_blocks(residual_relu)
    plain_loss, _, _ = chain_of_blocks(nn.relu)
    jax.tree.map(np.testing.assert_array_equal, jax.jit(jax.grad(loss, (0, 1)))(ws, x),
                 jax.jit(jax.grad(plain_loss, (0, 1)))(ws, x))


def test_resnet_blocks_end_with_it_with_cpu_kernels(monkeypatch):
    calls = []
    recording = CPU_KERNELS._replace(residual_relu=lambda z: calls.append(z.shape) or residual_relu(z))
    monkeypatch.setattr(resnet, "layers", lambda cpu_kernels: recording if cpu_kernels else None)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
    for block in (resnet.BasicBlock(16, cpu_kernels=True), resnet.Bottleneck(4, cpu_kernels=True)):
        block.init(jax.random.key(1), x, train=False)
    assert calls == [(2, 8, 8, 16)] * 2
