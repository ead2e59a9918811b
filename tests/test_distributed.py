"""Multi-process training: 2 processes × 1 device compute what 1 process × 2 devices computes,
a checkpoint written by 2 processes resumes in 1 process on another mesh (what happens when a
process of the job dies: tests/test_launch.py).

The runs use the real CLI (``scripts/launch_local.py`` and ``python -m tljax.train``) on the
digits runlocal config without its source pre-training (12 target steps from scratch): the
pre-training would double the compile time and ``stop_at_step`` would stop it too.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_train
from test_sharding import assert_within_rounding, initial_variables
from tljax import distributed

LAUNCH = os.path.join(ROOT, "scripts", "launch_local.py")
CONFIG_FILE = f"""
import importlib.util

spec = importlib.util.spec_from_file_location("digits_transfer", {os.path.join(ROOT, "configs", "digits_transfer.py")!r})
base = importlib.util.module_from_spec(spec)
spec.loader.exec_module(base)


def get_config(arg=None):
    config = base.get_config("runlocal")
    config.source = {{}}  # no source pre-training
    return config
"""
CPU = {"JAX_PLATFORMS": "cpu"}
# Processes of one job compile alike without JAX's persistent cache: with it, process 0 loads
# what the others compile (JAX writes the cache from process 0 only, and their single-device
# programs are keyed by their own devices), and a process > 30 s late at the first collective
# fails gloo's (fixed) rendezvous timeout on a loaded machine.
SAME_START = ["--config.compilation_cache="]


def launch(n, *args, timeout=300):
    cmd = [sys.executable, LAUNCH, "-n", str(n), "--", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **CPU}, timeout=timeout)


def params_at(ckpt_dir, step):
    """A checkpoint's params as numpy, whatever mesh wrote it (read here, on 1 device)."""
    import jax
    import orbax.checkpoint as ocp

    from tljax import params as P

    path = str(ckpt_dir / str(step) / "params")
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    params = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    return {k: np.asarray(v) for k, v in P.flatten(params).items()}


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def initial_params(config_file, **model):
    """The parameters training starts from (flat, as ``params_at`` reads them)."""
    from tljax.config import load_file

    config = load_file(str(config_file))
    config.model.update(model)
    return {k[len("params/"):]: v for k, v in initial_variables(config, 5).items() if k.startswith("params/")}


# Processes, seen through /proc (Linux): the tests below check by PID that no worker survives.

def test_plan_reads_config_then_environment():
    env = {"TLJAX_COORDINATOR": "h:1", "TLJAX_NUM_PROCESSES": "4", "TLJAX_PROCESS_ID": "3"}
    assert distributed.plan(None, env) == {"coordinator_address": "h:1", "num_processes": 4, "process_id": 3}
    config = {"distributed": {"num_processes": 2, "process_id": 1}}
    assert distributed.plan(config, env) == {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1}
    assert distributed.plan(None, {}) is None  # nothing set, no cluster: single process
    assert distributed.plan(None, {}, cluster="SlurmCluster") == {}  # JAX fills in the cluster's values
    assert distributed.plan(None, {"TLJAX_NUM_PROCESSES": "1"}, cluster="SlurmCluster") is None
    with pytest.raises(ValueError, match="TLJAX_COORDINATOR"):
        distributed.plan(None, {"TLJAX_NUM_PROCESSES": "2", "TLJAX_PROCESS_ID": "0"})
    with pytest.raises(ValueError, match="outside"):
        distributed.plan(None, {**env, "TLJAX_PROCESS_ID": "4"})


def test_timeouts_come_from_config_then_environment():
    assert distributed.timeouts(None, {}) == distributed.TIMEOUTS
    assert distributed.TIMEOUTS["heartbeat_timeout_seconds"] <= 30  # seconds, not JAX's 100
    env = {"TLJAX_HEARTBEAT_TIMEOUT_SECONDS": "3", "TLJAX_SHUTDOWN_TIMEOUT_SECONDS": "7"}
    assert distributed.timeouts(None, env)["heartbeat_timeout_seconds"] == 3
    got = distributed.timeouts({"distributed": {"shutdown_timeout_seconds": 20}}, env)
    assert got == {**distributed.TIMEOUTS, "heartbeat_timeout_seconds": 3, "shutdown_timeout_seconds": 20}
    with pytest.raises(ValueError, match="heartbeat_timeout_seconds must be a positive"):
        distributed.timeouts(None, {"TLJAX_HEARTBEAT_TIMEOUT_SECONDS": "0"})


def test_error_lines_name_a_lost_peer():
    gloo = ValueError("UNKNOWN: Gloo all-reduce failed: [pair.cc:538] Read error: Connection reset by peer")
    line = distributed.peer_lost_message(gloo, 0, 2, 10)
    assert line.startswith("error: process 0 of 2 lost contact with another process") and "Gloo" in line
    assert "heartbeat_timeout_seconds" in line
    line = distributed.peer_lost_message(KeyError("label"), 1, 2, 10)
    assert line.startswith("error: process 1 of 2 failed: KeyError")


def test_two_processes_match_two_devices_and_resume_in_one_process(tmp_path):
    two, one = tmp_path / "two_processes", tmp_path / "two_devices"
    config = tmp_path / "runlocal_no_source.py"
    config.write_text(CONFIG_FILE)
    # a constant (after warm-up) learning rate, so 12 steps resumed to 16 are the first 16 of a 16-step run;
    # SGD, whose update is linear in the gradients, so the layouts agree to rounding (test_sharding.rounding_bounds)
    args = ["--config", str(config), "--config.lr_schedule=constant", "--config.optimizer=sgd"]
    result = launch(2, sys.executable, "-m", "tljax.train", *args, *SAME_START, "--workdir", str(two))  # 2 × 1 device
    assert result.returncode == 0, result.stdout[-3000:]
    written = json.loads((two / "summary.json").read_text())  # by process 0 alone
    assert (written["num_processes"], written["num_devices"], written["num_steps"]) == (2, 2, 12)
    two_devices = {**CPU, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    run_train(one, *args[2:], "--config.num_steps=16", config=str(config), env=two_devices)

    start = initial_params(config)
    assert_within_rounding(params_at(two / "ckpt", 12), params_at(one / "ckpt", 12), start, 12,
                           "2 processes vs 1 process x 2 devices at step 12")

    # the 2-process checkpoint resumes in 1 process × 1 device (another mesh) and goes on identically
    one_device = {**CPU, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    run_train(two, *args[2:], "--config.num_steps=16", config=str(config), env=one_device)
    summary = json.loads((two / "summary.json").read_text())
    assert (summary["resumed_from_step"], summary["num_processes"], summary["num_devices"]) == (12, 1, 1)
    assert_within_rounding(params_at(two / "ckpt", 16), params_at(one / "ckpt", 16), start, 16,
                           "resumed in 1 process x 1 device vs 1 process x 2 devices at step 16")
    assert max_diff(params_at(two / "ckpt", 16), params_at(two / "ckpt", 12)) > 1e-3  # it did train on


def test_two_processes_with_fsdp_match_data_parallel(tmp_path):
    """Parameters split over 2 processes (mesh fsdp 2): no process holds a whole kernel, yet the
    run (frozen-parameter check, evaluation, checkpoint) ends where data parallelism does."""
    fsdp, dp = tmp_path / "fsdp", tmp_path / "dp"
    config = tmp_path / "runlocal_no_source.py"
    config.write_text(CONFIG_FILE)
    args = ["--config", str(config), "--config.model.widths=(32, 64, 128)", "--config.num_steps=4",
            "--config.optimizer=sgd"]  # linear in the gradients: the runs agree to rounding (see below)
    result = launch(2, sys.executable, "-m", "tljax.train", *args, *SAME_START, "--config.mesh=(('fsdp', -1),)",
                    "--workdir", str(fsdp))
    assert result.returncode == 0, result.stdout[-3000:]
    run_train(dp, *args[2:], config=str(config), env={**CPU, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    split, whole = (json.loads((d / "summary.json").read_text()) for d in (fsdp, dp))
    print(f"state per device: {whole['state_mb_per_device']:.2f} MB replicated, "
          f"{split['state_mb_per_device']:.2f} MB split over 2 processes")
    assert split["state_mb_per_device"] < 0.75 * whole["state_mb_per_device"]
    # parameters equal up to rounding change a prediction only where two logits tie to ~1e-6: at most one
    # of the 846 test digits, not the many a layout bug would move
    assert abs(split["accuracy"] - whole["accuracy"]) * whole["test_examples"] <= 1
    assert_within_rounding(params_at(fsdp / "ckpt", 4), params_at(dp / "ckpt", 4),
                           initial_params(config, widths=(32, 64, 128)), 4,
                           "fsdp over 2 processes vs data parallel on 2 devices at step 4")
