"""Resumable training: restarts and kills end where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tljax import checkpoint
from tljax import params as P

from conftest import ROOT, run_train

TARGET = ("--config.num_steps=16", "--config.ckpt_every=4")


def final_params(workdir):
    return P.flatten(checkpoint.load_params(os.path.join(workdir, "ckpt")))


def summary(workdir):
    with open(os.path.join(workdir, "summary.json")) as f:
        s = json.load(f)
    return {k: s[k] for k in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "confusion")}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    run_train(workdir, *TARGET)
    return workdir


def test_restart_in_a_new_process_is_bit_identical(straight, tmp_path):
    run_train(tmp_path, *TARGET, "--config.stop_at_step=8")
    assert not (tmp_path / "summary.json").exists()
    run_train(tmp_path, *TARGET)
    with open(tmp_path / "summary.json") as f:
        assert json.load(f)["resumed_from_step"] == 8
    a, b = final_params(straight), final_params(tmp_path)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert summary(straight) == summary(tmp_path)


def test_sigkill_mid_training_then_rerun_matches(straight, tmp_path):
    cmd = [sys.executable, "-m", "tljax.train", "--config", "configs/digits_transfer.py:runlocal",
           "--workdir", str(tmp_path), *TARGET, "--config.num_steps=60"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "ckpt" / "8").exists():  # the target run has saved twice
        assert proc.poll() is None and time.time() < deadline, "training ended or stalled before a checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "summary.json").exists()
    # the killed run asked for 60 steps; finish it with the same 60-step recipe
    run_train(tmp_path, *TARGET, "--config.num_steps=60")
    reference = tmp_path.parent / "reference"
    run_train(reference, *TARGET, "--config.num_steps=60")
    assert summary(reference) == summary(tmp_path)
    a, b = final_params(reference), final_params(tmp_path)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_checkpoint_of_another_model_is_refused_and_kept(straight):
    before = sorted(str(p) for p in straight.rglob("*"))
    result = run_train(straight, *TARGET, "--config.model.widths=(8, 16, 48)", check=False)
    assert result.returncode != 0
    assert "belongs to a different run" in result.stderr and "Nothing was deleted" in result.stderr
    assert "parameters differ" in result.stderr
    assert sorted(str(p) for p in straight.rglob("*")) == before


def test_params_alone_restore_for_another_strategy(straight):
    params = checkpoint.load_params(os.path.join(straight, "ckpt"))
    assert set(params) == {"params", "batch_stats"}
    assert params["params"]["head"]["kernel"].shape == (32, 5)
