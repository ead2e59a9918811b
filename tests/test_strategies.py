"""Every strategy: what it trains, what it leaves bit-identical, and its optimizer state."""

import io
import logging
import re
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tljax import checkpoint, data, lora, optim, strategies
from tljax import params as P
from tljax.config import load_file
from tljax.strategies.layout import depth_groups
from tljax.methods import finetune
from tljax.train import loop

from conftest import ROOT


@pytest.fixture(scope="module")
def config():
    return load_file(f"{ROOT}/configs/digits_transfer.py:runlocal")


@pytest.fixture(scope="module")
def pretrained(config):
    src = finetune.source_config(config)
    train, test, info = data.load_splits(src.data, src.seed)
    with tempfile.TemporaryDirectory() as d:
        return jax.device_get(loop.fit(src, train, test, info["num_classes"], d, "scratch").variables)


def train(config, pretrained, spec, tmp_path, **overrides):
    config = config.copy_and_resolve_references()
    config.update(overrides)
    tr, te, info = data.load_splits(config.data, config.seed)
    out = loop.fit(config, tr, {k: v[:64] for k, v in te.items()}, info["num_classes"], str(tmp_path), spec, pretrained)
    if out.summary is None:
        return None, None
    return out.summary, jax.device_get(out.variables["params"])


def moved(pretrained, params):
    a, b = P.flatten(pretrained["params"]), P.flatten(params)
    return {k for k in a if not np.array_equal(a[k], b[k])}


def matching(pretrained, pattern):
    return {k for k in P.flatten(pretrained["params"]) if re.fullmatch(pattern, k)}


def state_floats(summary, trained):
    """AdamW: 2 floats per trained parameter; the rest are a few scalar hyperparameters."""
    extra = summary["opt_state_floats"] - 2 * trained
    assert 0 <= extra <= 6 * 8, (summary["opt_state_floats"], trained)
    return True


ALL = ".*"
HEAD = "head/.*"


@pytest.mark.parametrize("spec, trains", [
    ("full_ft", ALL),
    ("linear_probe", HEAD),
    ("freeze_first_k:1", r"head/.*|backbone/layer[23]/.*"),
    ("bitfit", r"head/.*|.*/bias"),
    ("norm_only", r"head/.*|.*(bn\w*)/(scale|bias)"),
    ("llrd:0.5", ALL),
])
def test_what_moves_and_optimizer_state(config, pretrained, tmp_path, spec, trains):
    summary, params = train(config, pretrained, spec, tmp_path)
    expected = matching(pretrained, trains)
    assert moved(pretrained, params) == expected
    assert summary["trainable_params"] == sum(np.size(P.flatten(pretrained["params"])[k]) for k in expected)
    assert state_floats(summary, summary["trainable_params"])


def test_scratch_ignores_the_pretrained_weights(config, pretrained, tmp_path):
    summary, with_pretrained = train(config, pretrained, "scratch", tmp_path / "a", num_steps=2)
    _, without = train(config, None, "scratch", tmp_path / "b", num_steps=2)
    assert state_floats(summary, P.count(with_pretrained))
    assert P.flatten(with_pretrained).keys() == P.flatten(without).keys()
    for k, v in P.flatten(without).items():
        np.testing.assert_array_equal(P.flatten(with_pretrained)[k], v)


def test_llrd_multipliers_follow_depth(config, pretrained):
    labels = strategies.labels_for(strategies.get("llrd:0.5"), pretrained["params"])
    groups = optim.plan_groups(config, strategies.get("llrd:0.5"), labels, 100, 10)
    mult = {k: g.lr_mult for k, g in groups.items()}
    # head: 10x from config.lr_mults (first wins); stem 0.5^4, layer1 0.5^3, layer3 0.5^1
    assert mult["head/kernel"] == 10.0
    assert mult["backbone/conv1/kernel"] == 0.5 ** 4
    assert mult["backbone/layer1/block0/conv1/kernel"] == 0.5 ** 3
    assert mult["backbone/layer3/block0/conv2/kernel"] == 0.5


def test_depth_groups_know_resnet_vit_and_bert():
    resnet = ["backbone/conv1/kernel", "backbone/bn1/scale", "backbone/layer2/block0/conv1/kernel",
              "backbone/layer10/block0/conv1/kernel", "head/kernel"]
    assert [g for g, _ in depth_groups(resnet)] == ["stem", "block2", "block10"]
    vit = ["backbone/patch_embed/kernel", "backbone/cls_token", "backbone/layer0/norm1/scale",
           "backbone/layer1/mlp_fc1/kernel", "backbone/norm/scale"]
    assert [g for g, _ in depth_groups(vit)] == ["stem", "block0", "block1", "top"]
    bert = ["backbone/word_embeddings/embedding", "backbone/embeddings_norm/scale", "backbone/layer0/output/kernel"]
    assert [g for g, _ in depth_groups(bert)] == ["stem", "block0"]


def compiles_of_train_step(fn):
    """Runs ``fn`` and counts XLA compilations of the train step (from jax's own log)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    try:
        result = fn()
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(handler)
    lines = [line for line in stream.getvalue().splitlines() if "Finished XLA compilation of jit(train_step)" in line]
    return result, len(lines)


def test_gradual_unfreeze_stages_with_one_compilation(config, pretrained, tmp_path):
    # 50 examples, batch 32: 2 steps per epoch. Head from step 0, layer3 from 2, layer2 from 4,
    # layer1 from 6, stem from 8. After 5 steps: head, layer3 and layer2 moved; the rest did not.
    (summary, params), compiles = compiles_of_train_step(
        lambda: train(config, pretrained, "gradual_unfreeze:1", tmp_path, num_steps=5))
    assert compiles == 1
    assert moved(pretrained, params) == matching(pretrained, r"head/.*|backbone/layer[23]/.*")
    # every group will train, so every parameter has its moments from the start
    assert state_floats(summary, P.count(params))


def test_lp_ft_probes_then_fine_tunes(config, pretrained, tmp_path):
    labels = strategies.labels_for(strategies.get("lp_ft:0.5"), pretrained["params"])
    groups = optim.plan_groups(config, strategies.get("lp_ft:0.5"), labels, 12, 2)
    assert groups["head/kernel"].start_step == 0 and groups["backbone/conv1/kernel"].start_step == 6
    summary, early = train(config, pretrained, "lp_ft:0.9", tmp_path / "a", num_steps=10)  # backbone from step 9
    assert moved(pretrained, early) == matching(pretrained, ALL)
    assert state_floats(summary, P.count(early))
    train_until = lambda: train(config, pretrained, "lp_ft:0.9", tmp_path / "b", num_steps=10, stop_at_step=8)  # noqa
    assert train_until()[0] is None  # stopped, checkpoint saved
    probe_only = checkpoint.load_params(str(tmp_path / "b" / "ckpt"))["params"]
    assert moved(pretrained, probe_only) == matching(pretrained, HEAD)


def test_lora_trains_adapters_only_and_merges(config, pretrained, tmp_path):
    summary, merged = train(config, pretrained, "lora:2", tmp_path)
    kernels = lora.target_paths(pretrained["params"], None)
    assert kernels and all(k.endswith("conv1/kernel") or "conv" in k for k in kernels)
    # merged weights = base + A·B: the adapted kernels and the head moved, nothing else
    assert moved(pretrained, merged) == set(kernels) | matching(pretrained, HEAD)
    adapters = sum(np.prod(P.flatten(pretrained["params"])[k].shape[:-1]) * 2 +
                   2 * P.flatten(pretrained["params"])[k].shape[-1] for k in kernels)
    head = P.count(pretrained["params"]["head"])
    assert summary["trainable_params"] == adapters + head
    assert state_floats(summary, adapters + head)


def test_lora_merge_is_exact():
    params = {"backbone": {"q": {"kernel": jnp.ones((4, 3))}}}
    with_adapters = lora.add_adapters(params, rank=2, seed=0, targets="backbone/q/kernel")
    assert np.array_equal(lora.merge(with_adapters, 1.0)["backbone"]["q"]["kernel"], params["backbone"]["q"]["kernel"])
    with_adapters["backbone"]["q"]["lora_b"] = jnp.ones((2, 3))
    a = with_adapters["backbone"]["q"]["lora_a"]
    expected = 1 + 0.5 * a.sum(axis=1, keepdims=True) * jnp.ones((1, 3))
    # A·B with B all ones adds the same two numbers a.sum does (products by 1 are exact), × 0.5 is exact: equal
    np.testing.assert_array_equal(lora.merge(with_adapters, 0.5)["backbone"]["q"]["kernel"], expected)


@pytest.mark.parametrize("spec,rank,alpha,targets", [
    ("lora", 8, 8.0, None), ("lora:4,16", 4, 16.0, None),
    ("lora:4,16,targets=attention", 4, 16.0, strategies.builtin.LORA_TARGETS["attention"]),
    ("lora:2,targets=backbone/.*/(query|key)/kernel", 2, 2.0, "backbone/.*/(query|key)/kernel")])
def test_lora_reads_rank_alpha_and_targets(spec, rank, alpha, targets):
    assert strategies.get(spec).lora == dict(rank=rank, alpha=alpha, targets=targets)


@pytest.mark.parametrize("spec,says", [("lora:0", "rank must be >= 1"), ("lora:4,-1", "alpha > 0"),
                                       ("lora:4,targets=(query", "bad regex"), ("lora:x", "expected an integer")])
def test_bad_lora_arguments_are_named(spec, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        strategies.get(spec)


def test_lora_targets_pick_the_kernels_they_name():
    params = {"backbone": {"layer0": {"attention": {n: {"kernel": jnp.ones((4, 4))} for n in ("query", "key",
                                                                                             "value", "out")},
                                      "mlp_fc1": {"kernel": jnp.ones((4, 8))}}}}
    picked = lambda spec: set(lora.target_paths(params, strategies.get(spec).lora["targets"]))  # noqa: E731
    assert picked("lora:2") == {"backbone/layer0/attention/query/kernel", "backbone/layer0/attention/value/kernel"}
    assert len(picked("lora:2,targets=attention")) == 4
    assert picked("lora:2,targets=all_linear") == picked("lora:2,targets=attention") | {"backbone/layer0/mlp_fc1/kernel"}


def test_l2sp_pulls_towards_the_pretrained_weights(config, pretrained, tmp_path):
    tx = optim.pull_to_anchor(0.5)
    theta0 = {"w": jnp.array([1.0, 2.0])}
    state = tx.init(theta0)
    updates, _ = tx.update({"w": jnp.zeros(2)}, state, {"w": jnp.array([3.0, 2.0])})
    np.testing.assert_allclose(updates["w"], [1.0, 0.0])  # 0.5 * (θ − θ0)
    summary, params = train(config, pretrained, "l2sp:0.1,0.01", tmp_path)
    assert moved(pretrained, params) == matching(pretrained, ALL)
    total = summary["total_params"]
    backbone = total - P.count(pretrained["params"]["head"])
    extra = summary["opt_state_floats"] - 2 * total - backbone  # Adam moments + the anchor θ0
    assert 0 <= extra <= 6 * 8


def test_schedule_table_freezes_none_and_errors_on_gaps(config, pretrained, tmp_path):
    summary, params = train(config, pretrained, "full_ft", tmp_path,
                            schedule=[("head/.*", "constant"), ("backbone/layer3/.*", dict(decay_type="linear")),
                                      (".*", None)])
    assert moved(pretrained, params) == matching(pretrained, r"head/.*|backbone/layer3/.*")
    labels = strategies.labels_for(strategies.get("full_ft"), pretrained["params"])
    bad = config.copy_and_resolve_references()
    bad.schedule = [("head/.*", "cosine")]
    with pytest.raises(ValueError, match="covers no rule for 'backbone/"):
        optim.plan_groups(bad, strategies.get("full_ft"), labels, 10, 1)


def test_user_schedule_callable_and_registered_strategy(config, pretrained, tmp_path):
    @strategies.register("stem_only")
    def stem_only(arg):
        return strategies.Strategy("stem_only", [(r"backbone/(conv1|bn1)/.*|head/.*", "trainable"), (".*", "frozen")])

    seen = []
    schedule = optax.exponential_decay(1e-3, 5, 0.5)
    config = config.copy_and_resolve_references()
    config.schedule = [(".*", lambda step: seen.append(1) or schedule(step))]
    config.compare = ()
    tr, te, info = data.load_splits(config.data, config.seed)
    out = loop.fit(config, tr, te, info["num_classes"], str(tmp_path), "stem_only", pretrained)
    assert seen  # traced into the step
    assert moved(pretrained, jax.device_get(out.variables["params"])) == matching(
        pretrained, r"backbone/(conv1|bn1)/.*|head/.*")
