"""Faults: NaN/inf losses (stop or skip), checkpoints killed mid-write or corrupt, a workdir without room."""

import json
import os
import re
import shutil
import signal

import jax
import numpy as np
import pytest

from tljax import checkpoint, data, models, strategies
from tljax import params as P
from tljax.train import faults, loop, workdir
from tljax.train import state as T
from tljax.train import devices as D
from tljax.train import step as S

from conftest import ROOT, run_train

BATCH, N = 32, 128  # 4 batches per epoch


def nan_split(seed=0):
    """Random 8×8 images and 5 labels; one example (in global batch 2) is all NaN."""
    rng = np.random.default_rng(seed)
    split = {"image": rng.standard_normal((N, 8, 8, 1)).astype(np.float32),
             "label": rng.integers(0, 5, N).astype(np.int32)}
    bad = int(data.pipeline.batch_example_indices(split, BATCH, 0, 2)[5])
    split["image"][bad] = np.nan
    assert np.isnan(data.pipeline.train_dataset(split, BATCH, 0)[2]["image"]).any()  # the pipeline agrees
    return split, bad


def nan_config(config, policy, num_steps):
    config.update(dict(nan_policy=policy, num_steps=num_steps, ckpt_every=1, log_every=1, batch_size=BATCH,
                       warmup_steps=0, max_skipped_fraction=0.5))
    return config


def test_nan_stop_names_step_batch_and_examples_and_saves_nothing(runlocal_config, tmp_path):
    split, bad = nan_split()
    test = {k: v[:40] for k, v in nan_split(1)[0].items()}
    test["image"] = np.nan_to_num(test["image"])
    with pytest.raises(faults.NonFiniteLoss) as err:
        loop.fit(nan_config(runlocal_config, "stop", 8), split, test, 5, str(tmp_path), "scratch")
    message = str(err.value)
    assert "at step 3: batch 2 of this run" in message and re.search(rf"examples \[[^]]*\b{bad}\b", message)
    assert "the last good checkpoint is step 2" in message
    mngr = checkpoint.manager(str(tmp_path / "ckpt"))
    assert mngr.latest_step() == 2  # the NaN state of step 3 was never saved
    params = P.flatten(checkpoint.load_params(str(tmp_path / "ckpt"))["params"])
    assert all(np.isfinite(v).all() for v in params.values())
    assert not (tmp_path / "summary.json").exists()


def test_nan_skip_drops_those_updates_and_counts_them(runlocal_config, tmp_path):
    split, bad = nan_split()
    test = {k: np.nan_to_num(v[:40]) for k, v in nan_split(1)[0].items()}
    out = loop.fit(nan_config(runlocal_config, "skip", 8), split, test, 5, str(tmp_path), "scratch")
    expected = [s for s in range(8) if bad in data.pipeline.batch_example_indices(split, BATCH, 0, s)]
    assert len(expected) == 2  # once per epoch
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["skipped_steps"] == 2 and summary["skipped_batches"] == expected
    assert all(np.isfinite(v).all() for v in P.flatten(out.variables["params"]).values())
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if "skipped" in line]
    assert [r["step"] - 1 for r in log if r["skipped"]] == expected


def test_skipped_step_keeps_the_state_bit_for_bit(runlocal_config):
    """The guarded step is pure: a NaN batch returns the old params, optimizer and BN state."""
    model = models.create("resnet_digits", 5, widths=(4, 4, 4))
    split, _ = nan_split()
    good = {k: v[:BATCH] for k, v in split.items()}
    good["image"] = np.nan_to_num(good["image"])
    poisoned = {**good, "image": good["image"].copy()}
    poisoned["image"][3] = np.inf
    runlocal_config.warmup_steps = 0  # a skipped step leaves the schedule's count (and lr) where it was
    state, tx, mask, _ = T.prepare(runlocal_config, strategies.get("full_ft"),
                                      T.init_variables(model, good, 0), 4)
    mesh = D.make_mesh()
    step_fn = S.make_train_step(model, tx, mask, frozenset(), skip_nonfinite=True)
    compiled, _, _ = D.compile_train_step(step_fn, state, D.shard_batch(good, mesh), mesh)
    before = jax.device_get(state)
    state, metrics = compiled(jax.device_put(state, D.replicated(mesh)), D.shard_batch(poisoned, mesh))
    assert int(metrics["skipped"]) == 1 and not np.isfinite(float(metrics["loss"]))
    after = jax.device_get(state)
    assert int(after.step) == 1
    for a, b in zip(jax.tree.leaves((before.params, before.batch_stats, before.opt_state)),
                    jax.tree.leaves((after.params, after.batch_stats, after.opt_state))):
        np.testing.assert_array_equal(a, b)
    state, metrics = compiled(state, D.shard_batch(good, mesh))
    assert int(metrics["skipped"]) == 0
    assert not np.array_equal(jax.device_get(state.params)["head"]["kernel"], before.params["head"]["kernel"])


# --- checkpoints: killed mid-write, corrupt; the run resumes from the last good one ----------

TARGET = ("--config.num_steps=16", "--config.ckpt_every=4")


def final_params(workdir):
    return P.flatten(checkpoint.load_params(os.path.join(workdir, "ckpt")))


def test_killed_while_saving_and_corrupt_checkpoint_resume_from_last_good(tmp_path):
    straight = tmp_path / "straight"
    run_train(straight, *TARGET)
    work = tmp_path / "work"
    shutil.copytree(straight / "source", work / "source")  # the pre-trained source model, reused

    # 1. SIGKILL inside the write of step 12: orbax has written its items into a temporary folder
    killed = run_train(work, *TARGET, entry=(os.path.join(ROOT, "tests", "kill_in_save.py"), "12"), check=False)
    assert killed.returncode == -signal.SIGKILL
    ckpt = work / "ckpt"
    unfinished = [p.name for p in ckpt.iterdir() if ".orbax-checkpoint-tmp" in p.name]
    assert unfinished and unfinished[0].startswith("12.") and (ckpt / unfinished[0] / "params").is_dir()
    assert sorted(p.name for p in ckpt.iterdir() if p.name.isdigit()) == ["4", "8"]

    # 2. and the newest complete checkpoint is truncated on disk
    data_files = sorted((ckpt / "8" / "params").rglob("d/*"), key=lambda p: p.stat().st_size)
    os.truncate(data_files[-1], data_files[-1].stat().st_size // 2)

    rerun = run_train(work, *TARGET)
    out = rerun.stdout + rerun.stderr
    assert "checkpoint step 12" in out and "was never finished" in out
    assert "checkpoint step 8" in out and "is unreadable" in out and "trying step 4" in out
    assert "not deleted" in out
    aside = work / "ckpt.corrupt"
    assert (aside / "8" / "params").is_dir() and (aside / unfinished[0]).is_dir()  # kept for inspection
    summary = json.loads((work / "summary.json").read_text())
    assert summary["resumed_from_step"] == 4
    a, b = final_params(straight), final_params(work)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_workdir_without_room_or_unwritable_fails_before_training(tmp_path):
    result = run_train(tmp_path / "full", "--config.min_free_mb=1000000000000", check=False)
    assert result.returncode != 0 and "MB free" in result.stderr and "min_free_mb" in result.stderr
    assert not (tmp_path / "full" / "ckpt").exists() and not (tmp_path / "full" / "source").exists()
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is not writable"):
        workdir.check(str(blocker / "run"), 200)
    workdir.check(str(tmp_path / "ok"), min_free_mb=1)
