"""Multi-process training: 2 processes × 1 device compute what 1 process × 2 devices computes,
and a checkpoint written by 2 processes resumes in 1 process on another mesh.

The runs use the real CLI (``scripts/launch_local.py`` and ``python -m tljax.train``) on the
digits runlocal config without its source pre-training (12 target steps from scratch): the
pre-training would double the compile time and ``stop_at_step`` would stop it too.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_train
from tljax import distributed

LAUNCH = os.path.join(ROOT, "scripts", "launch_local.py")
CONFIG_FILE = f"""
import importlib.util

spec = importlib.util.spec_from_file_location("digits_transfer", {os.path.join(ROOT, "configs", "digits_transfer.py")!r})
base = importlib.util.module_from_spec(spec)
spec.loader.exec_module(base)


def get_config(arg=None):
    config = base.get_config("runlocal")
    del config["source"]
    return config
"""
CPU = {"JAX_PLATFORMS": "cpu"}


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


def test_launcher_stops_all_when_one_fails():
    child = ("import os, sys, time\n"
             "i = int(os.environ['TLJAX_PROCESS_ID'])\n"
             "print('hello from', i, os.environ['TLJAX_NUM_PROCESSES'], flush=True)\n"
             "sys.exit(3) if i == 1 else time.sleep(120)\n")
    start = time.time()
    result = launch(2, sys.executable, "-c", child, timeout=60)
    assert result.returncode == 3, result.stderr
    assert time.time() - start < 30  # process 0 was killed, not waited for
    assert "[0] hello from 0 2" in result.stdout and "[1] hello from 1 2" in result.stdout
    assert "process 1 exited with 3" in result.stderr


def test_two_processes_match_two_devices_and_resume_in_one_process(tmp_path):
    two, one = tmp_path / "two_processes", tmp_path / "two_devices"
    config = tmp_path / "runlocal_no_source.py"
    config.write_text(CONFIG_FILE)
    # a constant (after warm-up) learning rate, so 12 steps resumed to 16 are the first 16 of a 16-step run
    args = ["--config", str(config), "--config.lr_schedule=constant"]
    result = launch(2, sys.executable, "-m", "tljax.train", *args, "--workdir", str(two))  # 2 processes × 1 device
    assert result.returncode == 0, result.stdout[-3000:]
    written = json.loads((two / "summary.json").read_text())  # by process 0 alone
    assert (written["num_processes"], written["num_devices"], written["num_steps"]) == (2, 2, 12)
    two_devices = {**CPU, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    run_train(one, *args[2:], "--config.num_steps=16", config=str(config), env=two_devices)

    at_12 = max_diff(params_at(two / "ckpt", 12), params_at(one / "ckpt", 12))
    print(f"max |2 processes - 1 process x 2 devices| at step 12: {at_12:.3g}")
    assert at_12 <= 1e-5

    # the 2-process checkpoint resumes in 1 process × 1 device (another mesh) and goes on identically
    one_device = {**CPU, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    run_train(two, *args[2:], "--config.num_steps=16", config=str(config), env=one_device)
    summary = json.loads((two / "summary.json").read_text())
    assert (summary["resumed_from_step"], summary["num_processes"], summary["num_devices"]) == (12, 1, 1)
    at_16 = max_diff(params_at(two / "ckpt", 16), params_at(one / "ckpt", 16))
    print(f"max |resumed in 1 process x 1 device - 1 process x 2 devices| at step 16: {at_16:.3g}")
    assert at_16 <= 1e-5
    assert max_diff(params_at(two / "ckpt", 16), params_at(two / "ckpt", 12)) > 1e-3  # it did train on


def test_two_processes_with_fsdp_match_data_parallel(tmp_path):
    """Parameters split over 2 processes (mesh fsdp 2): no process holds a whole kernel, yet the
    run (frozen-parameter check, evaluation, checkpoint) ends where data parallelism does."""
    fsdp, dp = tmp_path / "fsdp", tmp_path / "dp"
    config = tmp_path / "runlocal_no_source.py"
    config.write_text(CONFIG_FILE)
    args = ["--config", str(config), "--config.model.widths=(32, 64, 128)", "--config.num_steps=4"]
    result = launch(2, sys.executable, "-m", "tljax.train", *args, "--config.mesh=(('fsdp', -1),)",
                    "--workdir", str(fsdp))
    assert result.returncode == 0, result.stdout[-3000:]
    run_train(dp, *args[2:], config=str(config), env={**CPU, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    split, whole = (json.loads((d / "summary.json").read_text()) for d in (fsdp, dp))
    print(f"state per device: {whole['state_mb_per_device']:.2f} MB replicated, "
          f"{split['state_mb_per_device']:.2f} MB split over 2 processes")
    assert split["state_mb_per_device"] < 0.75 * whole["state_mb_per_device"]
    assert split["accuracy"] == whole["accuracy"]
    diff = max_diff(params_at(fsdp / "ckpt", 4), params_at(dp / "ckpt", 4))
    print(f"max |fsdp over 2 processes - data parallel on 2 devices| at step 4: {diff:.3g}")
    assert diff <= 1e-5
