"""Validation split, periodic evaluation, the best checkpoint and early stopping (tljax.train.selection)."""

import json
import os
import shutil
import signal

import numpy as np
import pytest

from tljax import checkpoint, data
from tljax.train import loop

from conftest import ROOT, run_train


def val_config(config, **fields):
    config.data.val_fraction = 0.3
    config.update({"eval_every": 2, "ckpt_every": 4, "log_every": 2, **fields})
    return config


def records(workdir, key):
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    return [(r["step"], r[key]) for r in lines if key in r]


def test_validation_split_is_stratified_seeded_and_names_an_empty_class():
    split = {"image": np.zeros((60, 2, 2, 1), np.float32), "label": np.repeat(np.arange(3), 20).astype(np.int32)}
    train, val = data.stratified_split(split, 0.25, seed=0)
    assert np.bincount(val["label"]).tolist() == [5, 5, 5] and len(train["label"]) == 45
    again_train, again_val = data.stratified_split(split, 0.25, seed=0)
    np.testing.assert_array_equal(val["label"], again_val["label"])
    few = {"label": np.asarray([0] * 10 + [1] * 2, np.int32)}
    with pytest.raises(ValueError, match="leaves class 'b' .*2 training examples.*no validation"):
        data.stratified_split(few, 0.2, 0, label_names=["a", "b"])


def test_best_checkpoint_is_the_best_validation_evaluation_and_test_reads_it(runlocal_config, tmp_path):
    config = val_config(runlocal_config, num_steps=12)
    train, test, info = data.load_splits(config.data, config.seed)
    assert info["val"] is not None and info["val_examples"] == 15
    out = loop.fit(config, train, test, 5, str(tmp_path), "scratch", info=info)
    accuracies = records(tmp_path, "val_accuracy")
    assert [s for s, _ in accuracies] == [2, 4, 6, 8, 10, 12]
    best_value = max(a for _, a in accuracies)
    best_step = next(s for s, a in accuracies if a == best_value)  # the first of equals: strictly better wins
    assert out.summary["chosen_step"] == best_step and out.summary["val_accuracy"] == best_value
    assert checkpoint.manager(str(tmp_path / "ckpt_best")).all_steps() == [best_step]
    kept = checkpoint.load_params(str(tmp_path / "ckpt_best"), best_step)["params"]
    np.testing.assert_array_equal(kept["head"]["kernel"], out.variables["params"]["head"]["kernel"])
    assert records(tmp_path, "test_accuracy")[0][1] == out.summary["accuracy"]
    assert (tmp_path / "tb").is_dir() and os.listdir(tmp_path / "tb")  # TensorBoard events beside the log


def test_early_stopping_stops_after_patience_evaluations(runlocal_config, tmp_path):
    config = val_config(runlocal_config, num_steps=40, lr=1e-12, eval_every=1, early_stopping_patience=2)
    train, test, info = data.load_splits(config.data, config.seed)
    out = loop.fit(config, train, test, 5, str(tmp_path), "scratch", info=info)
    assert out.completed and out.summary["stopped_early"] and out.summary["steps_trained"] == 3
    assert out.summary["chosen_step"] == 1 and out.summary["validation_evaluations"] == 3
    again = loop.fit(config, train, test, 5, str(tmp_path), "scratch", info=info)  # a rerun trains no further
    assert again.summary["steps_trained"] == 3 and again.summary["stopped_early"]


def test_resume_after_sigkill_keeps_best_and_patience(tmp_path):
    """Killed while writing step 8 (a checkpoint or the best one), the rerun ends exactly as a run
    that was never killed: the same chosen step, validation figures and evaluation count."""
    args = ("--config.data.val_fraction=0.3", "--config.eval_every=2", "--config.ckpt_every=4",
            "--config.num_steps=16", "--config.early_stopping_patience=5", "--config.compilation_cache=")
    straight = tmp_path / "straight"
    run_train(straight, *args)
    work = tmp_path / "work"
    shutil.copytree(straight / "source", work / "source")
    killed = run_train(work, *args, entry=(os.path.join(ROOT, "tests", "kill_in_save.py"), "8"), check=False)
    assert killed.returncode == -signal.SIGKILL
    run_train(work, *args)
    a, b = (json.loads((d / "summary.json").read_text()) for d in (straight, work))
    assert b["resumed_from_step"] == 4
    for key in ("chosen_step", "val_accuracy", "val_loss", "accuracy", "validation_evaluations", "stopped_early"):
        assert a[key] == b[key], key
