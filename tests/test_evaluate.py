"""Cached-feature linear probe, ridge read-out and k-fold CV."""

import tempfile

import jax
import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier

from tljax import data
from tljax.train import evaluate
from tljax.config import load_file
from tljax.methods import finetune
from tljax.run import run as run_job
from tljax.train import loop
from tljax.train import state as T

from conftest import ROOT


def test_ridge_matches_a_direct_solution():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 5)) * 3
    y = rng.integers(0, 3, 120)
    x = centers[y] + rng.normal(size=(120, 5))
    predictions = evaluate.ridge_predict(x[:80], y[:80], x[80:], 3, l2=1e-3)
    standardized = (x - x[:80].mean(0)) / (x[:80].std(0) + 1e-6)
    reference = RidgeClassifier(alpha=1e-3).fit(standardized[:80], y[:80]).predict(standardized[80:])
    assert np.mean(predictions == reference) >= 0.97
    assert np.mean(predictions == y[80:]) > 0.9


def test_cross_validation_reports_mean_and_std():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(2), 30)
    x = np.where(y[:, None] == 1, 2.0, -2.0) + rng.normal(size=(60, 4))
    cv = evaluate.cross_validate(x, y, 2, folds=5)
    assert cv["cv_folds"] == 5 and cv["cv_accuracy_mean"] > 0.9 and cv["cv_accuracy_std"] >= 0
    with pytest.raises(ValueError, match="cv_folds=100 exceeds the 60"):
        evaluate.cross_validate(x, y, 2, folds=100)


def test_cached_linear_probe_equals_the_uncached_one(tmp_path):
    config = load_file(f"{ROOT}/configs/digits_transfer.py:runlocal")
    src = finetune.source_config(config)
    tr, te, info = data.load_splits(src.data, src.seed)
    with tempfile.TemporaryDirectory() as d:
        pretrained = jax.device_get(loop.fit(src, tr, te, 5, d, "scratch").variables)
    train, test, info = data.load_splits(config.data, config.seed)
    config.num_steps = 30
    plain = finetune.fit_strategy(config, train, test, info, str(tmp_path / "plain"), "linear_probe", pretrained)
    config.feature_cache, config.cv_folds = True, 5
    cached = finetune.fit_strategy(config, train, test, info, str(tmp_path / "cached"), "linear_probe", pretrained)
    a, b = plain.summary, cached.summary
    assert b["feature_cache"] and b["strategy"] == "linear_probe"
    assert b["trainable_params"] == a["trainable_params"] and b["total_params"] == a["total_params"]
    # same head, same batches, same optimizer: the same predictions up to float reassociation
    assert abs(a["accuracy"] - b["accuracy"]) <= 0.01
    np.testing.assert_allclose(plain.variables["params"]["head"]["kernel"],
                               cached.variables["params"]["head"]["kernel"], atol=1e-4)
    assert 0 < b["ridge_accuracy"] <= 1 and b["cv_folds"] == 5
