"""``cpu_kernels``: models built from the XLA:CPU forms of their layers have the same parameters, outputs
and gradients as the plain Flax ones; and the smaller forms (dots, 1×1/3×3 Conv, stem pool, dropout)
each equal the op they replace. Winograd, the residual ReLU and BatchNorm have their own files."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import models
from tljax.models import xla_cpu
from tljax.models.layers import CPU_KERNELS, PLAIN, layers
from tljax.models.xla_cpu.dots import Dense, dense_dot
from tljax.models.xla_cpu.dropout import Dropout, threefry_words

TINY_BERT = {"vocab_size": 30, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 32, "max_position_embeddings": 12, "model_type": "bert",
             "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
TINY_VIT = dict(patch_size=2, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, image_size=8)
RNG = np.random.default_rng(0)
# (arch, overrides, input): sizes chosen so each form runs (Winograd needs 12–56 per side).
MODELS = {
    "resnet_digits": ("resnet_digits", dict(widths=(8, 16, 32)), RNG.standard_normal((4, 16, 16, 3))),
    "resnet18": ("resnet18", dict(widths=(8, 8, 16, 16), stage_sizes=(1, 1, 1, 1)),  # stem, max-pool, 12² stage
                 RNG.standard_normal((2, 48, 48, 3))),
    "resnet50": ("resnet50", dict(widths=(4, 8), stage_sizes=(1, 1), stem="small"), RNG.standard_normal((2, 14, 14, 3))),
    "bert": ("bert", dict(config=TINY_BERT), RNG.integers(1, 30, (3, 7))),
    "vit": ("vit_b16", TINY_VIT, RNG.standard_normal((2, 8, 8, 3))),
}
# Both modes compute the same float32 sums in another order (Winograd's tile transforms, dots
# contracted the other way round, BatchNorm's hand-written backward). A reordered sum differs by a
# few float32 roundings (2⁻²⁴ ≈ 6e-8) of its terms' scale; through these nets that stays under 1e-5
# of the largest value (≈ 170 roundings; seen: ≤ 2.2e-6), while a wrong form (a misplaced tile, a
# lost term) is off by a sizeable fraction of it. Gradients are compared as one vector, scaled by its
# largest entry: a leaf like BatchNorm's Σ dy·x̂ can cancel far below the terms its rounding follows.
# Inputs are fixed and small: a ReLU input within rounding of 0 may switch sides between the modes.
TOLERANCE = 1e-5


def train_step_results(name, cpu_kernels):
    arch, overrides, x = MODELS[name]
    x = jnp.asarray(x, jnp.int32 if arch == "bert" else jnp.float32)
    model = models.create(arch, 5, cpu_kernels=cpu_kernels, **overrides)
    variables = model.init(jax.random.key(0), x)

    def loss(params):
        y, updates = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(jnp.sin(y)), (y, updates)

    jaxpr = str(jax.make_jaxpr(jax.grad(loss, has_aux=True))(variables["params"]))
    (_, (y, updates)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    return variables, y, updates, grads, jaxpr


@pytest.mark.parametrize("name", list(MODELS))
def test_cpu_kernels_give_the_same_parameters_outputs_and_gradients(name):
    plain, kernels = train_step_results(name, False), train_step_results(name, True)
    assert jax.tree.structure(plain[0]) == jax.tree.structure(kernels[0])
    jax.tree.map(np.testing.assert_array_equal, plain[0], kernels[0])  # same paths, shapes, initial values
    for want, got in ((plain[1], kernels[1]), (plain[2], kernels[2]), (plain[3], kernels[3])):
        scale = max((float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(want)), default=0.0)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=0, atol=TOLERANCE * scale), want, got)
    assert "custom_vjp_call" not in plain[4] and "optimization_barrier" not in plain[4]  # flax's ops only
    assert "custom_vjp_call" in kernels[4]  # the forms really ran


def modules_called(model, *args, **kwargs):
    seen = []

    def record(next_fun, args, kwargs, context):
        seen.append(context.module)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):  # traced only: the modules are what is recorded
        jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, *args, **kwargs))
    return seen


@pytest.mark.parametrize("arch, overrides, x", [
    ("bert", dict(config={**TINY_BERT, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.2}),
     jnp.ones((2, 5), jnp.int32)),
    ("vit_b16", dict(TINY_VIT, dropout_rate=0.1, attention_dropout_rate=0.2), jnp.ones((1, 8, 8, 3))),
    ("vgg16_bn", dict(stages=((4,), (4,)), fc_width=8, pool_size=2), jnp.ones((2, 8, 8, 3))),
    ("resnet18", dict(widths=(4, 4, 4, 4)), jnp.ones((2, 32, 32, 3))),
    ("bag_of_embeddings", dict(vocab_size=9, dropout=0.3), jnp.ones((2, 5), jnp.int32)),
])
def test_without_cpu_kernels_models_call_flax_layers_only_and_dropout_is_nn_dropout(arch, overrides, x):
    rates = {0.1, 0.2, 0.3, 0.5}
    for cpu_kernels in (False, True):
        called = modules_called(models.create(arch, 3, cpu_kernels=cpu_kernels, **overrides), x, train=True)
        from_kernels = [m for m in called if type(m).__module__.startswith("tljax.models.xla_cpu")]
        dropouts = [m for m in called if type(m).__name__ == "Dropout"]
        assert bool(from_kernels) == cpu_kernels and all(type(m).__module__.startswith("flax") or
                                                         type(m).__module__.startswith("tljax.models")
                                                         for m in called)
        if not cpu_kernels:
            assert all(type(m) is nn.Dropout and m.rate in rates for m in dropouts)  # the exact rate, flax's mask
            assert all(getattr(m, "dot_general", None) is None and getattr(m, "conv_general_dilated", None) is None
                       for m in called)  # nn.Dense's and nn.Conv's own products
            assert all(not isinstance(m, nn.BatchNorm) or type(m) is nn.BatchNorm for m in called)
        if arch != "resnet18":
            assert dropouts


def test_layer_sets_and_create_for_a_model_without_the_switch(monkeypatch):
    assert layers(False) is PLAIN and layers(True) is CPU_KERNELS
    assert PLAIN.Dropout is nn.Dropout and PLAIN.BatchNorm is nn.BatchNorm and PLAIN.residual_relu is nn.relu
    assert issubclass(xla_cpu.BatchNorm, nn.BatchNorm)  # the frozen-BatchNorm interceptor matches both
    monkeypatch.setitem(models.BACKBONES, "identity", lambda: models.Identity())
    assert isinstance(models.create("identity", 2, cpu_kernels=True).backbone, models.Identity)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("features", [(6, 7), (9, 4)])  # both orientations of the kernel gradient
def test_dense_dot_gradients_equal_autodiff_of_the_plain_product(dtype, features):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 5, 5, features[0])), dtype)
    kernel = jnp.asarray(rng.standard_normal(features), dtype)
    cotangent = jnp.asarray(rng.standard_normal((2, 5, 5, features[1])), dtype)
    loss = lambda f: lambda x, k: (f(x, k).astype(jnp.float32) * cotangent).sum()  # noqa: E731
    plain = jax.grad(loss(lambda x, k: jnp.einsum("nhwc,cd->nhwd", x, k)), argnums=(0, 1))(x, kernel)
    ours = jax.grad(loss(dense_dot), argnums=(0, 1))(x, kernel)
    tol = 1e-5 if dtype == jnp.float32 else 5e-2
    for want, got in zip(plain, ours):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=tol, atol=tol)


def equal_layers_and_gradients(ours, plain, x, tol=1e-5):
    """Same parameters (from the same key), outputs and gradients; returns ``ours``' jaxpr."""
    variables = plain.init(jax.random.key(0), x)
    jax.tree.map(np.testing.assert_array_equal, ours.init(jax.random.key(0), x), variables)
    grads = [jax.value_and_grad(lambda v, x: (layer.apply(v, x) ** 3).sum(), argnums=(0, 1))(variables, x)
             for layer in (plain, ours)]
    for want, got in zip(*map(jax.tree.leaves, grads)):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    return str(jax.make_jaxpr(ours.apply)(variables, x))


def test_dense_equals_flax_dense_and_its_gradients():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 4, 6)), jnp.float32)
    assert "custom_vjp_call" in equal_layers_and_gradients(Dense(5), nn.Dense(5), x)  # dense_dot is what ran


@pytest.mark.parametrize("size, strides, use_bias, runs_as", [
    (1, 1, False, "dot_general"), (1, 2, False, "dot_general"), (3, 1, False, "dot_general"),  # a dot, Winograd
    (3, 2, False, "conv_general_dilated"), (3, 1, True, "dot_general"), (7, 2, False, "conv_general_dilated")])
def test_conv_equals_flax_conv_with_its_parameters(size, strides, use_bias, runs_as):
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 14, 14, 6)), jnp.float32)
    fields = dict(features=5, kernel_size=(size, size), strides=(strides, strides), use_bias=use_bias,
                  padding=((size // 2, size // 2),) * 2)
    jaxpr = equal_layers_and_gradients(xla_cpu.Conv(**fields), nn.Conv(**fields), x / 4)
    assert runs_as in jaxpr and (runs_as == "conv_general_dilated") == ("conv_general_dilated" in jaxpr)


@pytest.mark.parametrize("shape", [(2, 112, 112, 4), (1, 7, 9, 2)])
def test_stem_max_pool_equals_flax_max_pool_and_its_gradient(shape):
    flax_pool = PLAIN.max_pool_3x3_s2
    rng = np.random.default_rng(0)
    for x in (jnp.asarray(rng.standard_normal(shape), jnp.float32),
              jnp.zeros(shape).at[:, ::3, ::2].set(1.0)):  # ties: the first maximum of a window takes it all
        np.testing.assert_array_equal(np.asarray(xla_cpu.max_pool_3x3_s2(x)), np.asarray(flax_pool(x)))
        dy = jnp.asarray(rng.standard_normal(flax_pool(x).shape), jnp.float32)
        want = jax.grad(lambda x: (flax_pool(x) * dy).sum())(x)
        got = jax.grad(lambda x: (xla_cpu.max_pool_3x3_s2(x) * dy).sum())(x)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_drops_the_rate_independently_and_scales_the_rest(rate):
    x = jnp.full((999, 1001), 2.0)  # odd size: the last 16-bit half is unused
    layer = Dropout(rate)
    out = np.asarray(layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)}))
    dropped = out == 0
    assert abs(dropped.mean() - rate) < 3e-3  # binomial sd ≈ 5e-4 for 1e6 draws
    np.testing.assert_allclose(out[~dropped], 2.0 / (1 - rate), rtol=1e-6)
    # the two halves of one random word decide neighbouring elements: they must not agree more than chance
    pairs = dropped.reshape(-1)[: dropped.size // 2 * 2].reshape(-1, 2)
    assert abs((pairs[:, 0] & pairs[:, 1]).mean() - rate ** 2) < 3e-3
    again = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
    other = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
    np.testing.assert_array_equal(np.asarray(again), out)
    assert (np.asarray(other) != out).mean() > rate * (1 - rate)  # independent masks differ in 2·rate·(1 − rate)
    assert layer.apply({}, x, deterministic=True) is x
    with pytest.raises(ValueError, match="rate 1.0 must be in"):
        Dropout(1.0).apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})


@pytest.mark.parametrize("key", [jax.random.PRNGKey(0), jax.random.fold_in(jax.random.PRNGKey(7), 3),
                                 jax.random.key(5), jax.random.key(5, impl="rbg")], ids=["raw", "folded", "typed", "rbg"])
def test_dropout_words_are_jax_random_bits(key):
    """The unrolled Threefry gives JAX's own words, so masks are what ``jax.random.bits`` would draw."""
    for n in (1, 7, 4097, 100_001):
        np.testing.assert_array_equal(np.asarray(threefry_words(key, n)), np.asarray(jax.random.bits(key, (n,), jnp.uint32)))
    jitted = jax.jit(threefry_words, static_argnums=1)(key, 513)
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(jax.random.bits(key, (513,), jnp.uint32)))
