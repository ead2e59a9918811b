"""Resuming a run: only the same run resumes; a changed optimizer, batch size or learning rate is
named and nothing is moved; diverged parameters never stay the checkpoint a rerun resumes from."""

import os

import numpy as np
import pytest

from tljax import checkpoint, data
from tljax import params as P
from tljax.checkpoint import CheckpointMismatchError
from tljax.train import faults, loop


def digits_splits(config):
    return data.load_splits(config.data, config.seed)


def stop_at(config, step):
    config.stop_at_step, config.ckpt_every = step, step
    return config


def listing(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


def test_changed_optimizer_is_a_mismatch_naming_it_and_moves_nothing(runlocal_config, tmp_path):
    train, test, info = digits_splits(runlocal_config)
    assert not loop.fit(stop_at(runlocal_config, 4), train, test, 5, str(tmp_path), "scratch").completed
    before = listing(tmp_path)
    runlocal_config.optimizer = "sgd"
    with pytest.raises(CheckpointMismatchError, match=r"optimizer: checkpoint 'adamw', this run 'sgd'"):
        loop.fit(runlocal_config, train, test, 5, str(tmp_path), "scratch")
    assert listing(tmp_path) == before and not (tmp_path / "ckpt.corrupt").exists()


def test_changed_arrays_without_a_named_field_are_a_mismatch_too(runlocal_config, tmp_path):
    """A checkpoint whose optimizer state holds other arrays (here: momentum off) is not 'corrupt'."""
    train, test, _ = digits_splits(runlocal_config)
    runlocal_config.optimizer = "sgd"
    loop.fit(stop_at(runlocal_config, 4), train, test, 5, str(tmp_path), "scratch")
    before = listing(tmp_path)
    runlocal_config.momentum = 0.0
    with pytest.raises(CheckpointMismatchError, match="opt_state holds .* arrays, this run's"):
        loop.fit(runlocal_config, train, test, 5, str(tmp_path), "scratch")
    assert listing(tmp_path) == before


def test_resume_with_another_lr_or_batch_is_refused_or_recorded(runlocal_config, tmp_path):
    train, test, _ = digits_splits(runlocal_config)
    loop.fit(stop_at(runlocal_config, 4), train, test, 5, str(tmp_path), "scratch")
    runlocal_config.lr, runlocal_config.stop_at_step = 5e-4, 0
    with pytest.raises(CheckpointMismatchError, match=r"(?s)lr: checkpoint 0.001, this run 0.0005.*allow_resume_changes"):
        loop.fit(runlocal_config, train, test, 5, str(tmp_path), "scratch")
    runlocal_config.allow_resume_changes = True
    out = loop.fit(runlocal_config, train, test, 5, str(tmp_path), "scratch")
    assert out.completed and out.summary["resumed_from_step"] == 4
    assert out.summary["resume_changes"] == {"lr": [1e-3, 5e-4]} and out.summary["lr"] == 5e-4


def test_diverged_checkpoint_is_set_aside_and_a_sane_rerun_finishes(runlocal_config, tmp_path):
    """lr=1e30: step 1's parameters are huge but finite; step 2's loss is not. The rerun with a sane
    learning rate must not resume from step 1 (it would fail at the same step forever)."""
    train, test, _ = digits_splits(runlocal_config)
    runlocal_config.update(dict(lr=1e30, ckpt_every=1, warmup_steps=0))
    with pytest.raises(faults.NonFiniteLoss, match="moved aside") as err:
        loop.fit(runlocal_config, train, test, 5, str(tmp_path), "scratch")
    assert "no good checkpoint is left" in str(err.value) or "last good checkpoint is step" in str(err.value)
    mngr = checkpoint.manager(str(tmp_path / "ckpt"))
    for step in mngr.all_steps():  # whatever is left trains on: finite and not blown up
        params = P.flatten(checkpoint.load_params(str(tmp_path / "ckpt"), step)["params"])
        assert all(np.all(np.abs(v) < 1e6) for v in params.values()), step
    assert os.listdir(str(tmp_path / "ckpt") + ".nonfinite")  # kept for inspection, not deleted
    runlocal_config.update(dict(lr=1e-3, allow_resume_changes=True))
    out = loop.fit(runlocal_config, train, test, 5, str(tmp_path), "scratch")
    assert out.completed and np.isfinite(out.summary["accuracy"])


def test_nan_skip_stops_past_the_configured_fraction(runlocal_config, tmp_path):
    train, test, _ = digits_splits(runlocal_config)
    runlocal_config.update(dict(lr=1e30, warmup_steps=0, nan_policy="skip", max_skipped_fraction=0.25,
                                ckpt_every=0))
    with pytest.raises(faults.NonFiniteLoss, match=r"were skipped .*more than config.max_skipped_fraction=0.25"):
        loop.fit(runlocal_config, train, test, 5, str(tmp_path), "scratch")
    assert not (tmp_path / "summary.json").exists()
