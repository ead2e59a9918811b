"""Freezing costs nothing: no gradients (XLA's FLOP count), no optimizer state, no movement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import data, models, strategies
from tljax import params as P
from tljax.methods import finetune
from tljax.train import loop
from tljax.train import state as T
from tljax.train import devices as D
from tljax.train import step as S


def test_rules_first_match_wins_and_errors_name_paths():
    params = {"backbone": {"a": {"kernel": 1}, "b": {"kernel": 2}}, "head": {"kernel": 3}}
    labels = strategies.labels_from_rules(params, [("backbone/a/.*", "frozen"), ("backbone/.*", "x"), (".*", "y")])
    assert P.flatten(labels) == {"backbone/a/kernel": "frozen", "backbone/b/kernel": "x", "head/kernel": "y"}
    with pytest.raises(ValueError, match=r"match no rule, e.g. \['head/kernel'\]"):
        strategies.labels_from_rules(params, [("backbone/.*", "frozen")])
    with pytest.raises(ValueError, match=r"rules \['backbone/b/.\*'\] match no parameter"):
        strategies.labels_from_rules(params, [("backbone/.*", "frozen"), ("backbone/b/.*", "x"), (".*", "y")])


def compiled_step(config, strategy_spec):
    """The train step exactly as the loop builds it, for the full digits ResNet."""
    model = models.create(config.arch, 5)
    split, _, _ = data.load_splits(config.data, 0)
    batch = data.pipeline.train_dataset(split, config.batch_size, 0)[0]
    variables = T.init_variables(model, batch, 0)
    state, tx, mask, param_fn = T.prepare(config, strategies.get(strategy_spec), variables, 10)
    mesh = D.make_mesh()
    step_fn = S.make_train_step(model, tx, mask, S.frozen_batchnorms(state.batch_stats, mask), param_fn=param_fn)
    _, _, flops = D.compile_train_step(step_fn, state, D.shard_batch(batch, mesh), mesh)
    return state, flops


def test_linear_probe_flops_and_optimizer_state(runlocal_config):
    config = runlocal_config
    config.model = {}  # the full-size digits ResNet of the demo
    full_state, full_flops = compiled_step(config, "full_ft")
    probe_state, probe_flops = compiled_step(config, "linear_probe")
    assert probe_flops / full_flops <= 0.45, (probe_flops, full_flops)
    head = P.count(full_state.params["head"])
    # AdamW keeps two floats (mu, nu) per trained parameter and nothing for frozen ones, plus
    # a few scalar hyperparameters (learning rate, betas, …) per group from inject_hyperparams.
    for state, trained in [(probe_state, head), (full_state, P.count(full_state.params))]:
        scalars = sum(1 for x in jax.tree.leaves(state.opt_state) if x.ndim == 0 and jnp.issubdtype(x.dtype, jnp.floating))
        assert scalars <= 6 * 2  # six per trainable group (head at 10x lr, the rest)
        assert T.opt_state_floats(state.opt_state) == 2 * trained + scalars


def digits_splits(config):
    train, test, info = data.load_splits(config.data, config.seed)
    return train, {k: v[:64] for k, v in test.items()}, info["num_classes"]


@pytest.fixture(scope="module")
def pretrained():
    from tljax.config import load_file
    from conftest import ROOT

    src = finetune.source_config(load_file(f"{ROOT}/configs/digits_transfer.py:runlocal"))
    train, test, info = data.load_splits(src.data, src.seed)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return jax.device_get(loop.fit(src, train, test, info["num_classes"], d, "scratch").variables)


def changed(before, after):
    a, b = P.flatten(before), P.flatten(after)
    return {k for k in a if not np.array_equal(np.asarray(a[k]), np.asarray(b[k]))}


@pytest.mark.parametrize("spec, frozen_pattern", [
    ("linear_probe", "backbone/.*"),
    ("freeze:backbone/(conv1|bn1|layer1)/.*", "backbone/(conv1|bn1|layer1)/.*"),
])
def test_frozen_params_and_their_batchnorm_stats_do_not_move(runlocal_config, pretrained, tmp_path, spec,
                                                            frozen_pattern):
    import re

    train, test, n = digits_splits(runlocal_config)
    result = loop.fit(runlocal_config, train, test, n, str(tmp_path), spec, pretrained)
    moved = changed(pretrained["params"], result.variables["params"])
    frozen = {k for k in P.flatten(pretrained["params"]) if re.fullmatch(frozen_pattern, k)}
    assert frozen and not (moved & frozen), sorted(moved & frozen)[:3]
    assert {k for k in P.flatten(pretrained["params"]) if not k.startswith("head/")} - frozen <= moved
    stats_moved = changed(pretrained["batch_stats"], result.variables["batch_stats"])
    frozen_bn = {k for k in P.flatten(pretrained["batch_stats"]) if re.fullmatch(frozen_pattern, k)}
    assert not (stats_moved & frozen_bn)
    assert set(P.flatten(pretrained["batch_stats"])) - frozen_bn <= stats_moved
    trained = sum(v.size for k, v in P.flatten(pretrained["params"]).items() if k not in frozen)
    assert result.summary["trainable_params"] == trained
    assert 0 <= result.summary["opt_state_floats"] - 2 * trained <= 12  # Adam moments + scalar hyperparameters


def test_frozen_batchnorm_can_be_switched_to_train_mode(runlocal_config, pretrained, tmp_path):
    runlocal_config.frozen_bn_train = True
    train, test, n = digits_splits(runlocal_config)
    result = loop.fit(runlocal_config, train, test, n, str(tmp_path), "linear_probe", pretrained)
    assert not changed(pretrained["params"], result.variables["params"]) - {"head/kernel", "head/bias"}
    assert changed(pretrained["batch_stats"], result.variables["batch_stats"]) == set(
        P.flatten(pretrained["batch_stats"]))


def test_full_ft_loss_goes_down(runlocal_config, pretrained, tmp_path):
    import json

    runlocal_config.num_steps, runlocal_config.log_every = 40, 4
    train, test, n = digits_splits(runlocal_config)
    loop.fit(runlocal_config, train, test, n, str(tmp_path), "full_ft", pretrained)
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "metrics.jsonl") if '"loss"' in line]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:2]), losses
