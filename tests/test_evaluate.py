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
from tljax.train import loop

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
    with pytest.raises(ValueError, match="cv_folds=31 exceeds the 30 training examples of the smallest class"):
        evaluate.cross_validate(x, y, 2, folds=31)  # stratified folds: each fold needs one example of each class


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
    # Same head, same batches, same optimizer; the features come from differently fused programs, so
    # they (and the head's gradients, sums over the batch) differ by rounding. The probe's gradients
    # (features x softmax error) do not cancel to rounding level, where Adam's division by the RMS
    # could turn rounding into ±lr, so each step differs by ~lr·mult·batch·eps at most, plus one
    # rounding of theta + update: measured 6e-8 (1 ulp) on AVX2 and SSE4.2 builds.
    head = plain.variables["params"]["head"]["kernel"]
    per_step = np.finfo(np.float32).eps * (np.abs(head).max() + max(m for _, m in config.lr_mults) * config.lr
                                           * config.batch_size)
    np.testing.assert_allclose(head, cached.variables["params"]["head"]["kernel"], rtol=0,
                               atol=config.num_steps * per_step)
    # heads equal to rounding change a prediction only where two logits tie to ~1e-6: at most one example
    assert abs(a["accuracy"] - b["accuracy"]) * a["test_examples"] <= 1
    assert 0 < b["ridge_accuracy"] <= 1 and b["cv_folds"] == 5
