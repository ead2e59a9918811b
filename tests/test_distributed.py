"""Multi-process training: 2 processes × 1 device compute what 1 process × 2 devices computes,
a checkpoint written by 2 processes resumes in 1 process on another mesh, and no process
outlives its job (killed launcher, killed peer).

The runs use the real CLI (``scripts/launch_local.py`` and ``python -m tljax.train``) on the
digits runlocal config without its source pre-training (12 target steps from scratch): the
pre-training would double the compile time and ``stop_at_step`` would stop it too.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

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

def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def children_of(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if parent_of(int(entry)) == pid:
                    found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def running(pid):
    """True while ``pid`` exists and has not exited (an exited, unreaped child is a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def process_id_of(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
    return int(env[b"TLJAX_PROCESS_ID"])


def wait_until(condition, timeout, what):
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"{what}: not after {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


def seconds_until_gone(pids, timeout):
    """Seconds until none of ``pids`` runs; kills (and fails on) any still running after ``timeout``."""
    start = time.monotonic()
    while any(running(p) for p in pids) and time.monotonic() - start < timeout:
        time.sleep(0.05)
    survivors = [p for p in pids if running(p)]
    for pid in survivors:  # our own workers: never leave them behind, even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"workers {survivors} still running {timeout} s later"
    return time.monotonic() - start


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")
# Processes of one job compile alike without JAX's persistent cache: with it, process 0 loads
# what the others compile (JAX writes the cache from process 0 only, and their single-device
# programs are keyed by their own devices), and a process > 30 s late at the first collective
# fails gloo's (fixed) rendezvous timeout on a loaded machine.
SAME_START = ["--config.compilation_cache="]
# a run that trains far longer than any test waits: only a kill ends it
LONG_RUN = ["--config.num_steps=100000", "--config.ckpt_every=4", "--config.log_every=4", *SAME_START]


def start_training(tmp_path, *extra):
    """``launch_local.py -n 2`` of a long digits run; returns (launcher, {process id: pid}, workdir)
    once both processes train (a checkpoint is a collective, so step 4's needs both)."""
    config = tmp_path / "runlocal_no_source.py"
    config.write_text(CONFIG_FILE)
    workdir = tmp_path / "run"
    cmd = [sys.executable, LAUNCH, "-n", "2", *extra, "--", sys.executable, "-m", "tljax.run", "--config",
           str(config), *LONG_RUN, "--workdir", str(workdir)]
    launcher = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **CPU}, stdout=open(tmp_path / "stdout", "w"),
                                stderr=open(tmp_path / "stderr", "w"))
    try:
        wait_until(lambda: (workdir / "ckpt" / "4").exists() or launcher.poll() is not None, 180, "training at step 4")
        assert launcher.poll() is None, (tmp_path / "stdout").read_text()[-3000:]
        workers = {process_id_of(pid): pid for pid in children_of(launcher.pid)}
        assert sorted(workers) == [0, 1], workers
    except BaseException:
        launcher.kill()  # its workers die with it (or are reaped by seconds_until_gone in the tests)
        raise
    return launcher, workers, workdir


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
    assert re.search(r"error: process 1 \(pid \d+\) exited with 3", result.stderr), result.stderr


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


@pytest.mark.slow
@linux_only
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_the_launcher_stops_every_worker(tmp_path, sig):
    """SIGTERM/SIGINT to the launcher: it stops its workers and exits 128 + signal. (It used to die
    at once and leave both training for minutes.)"""
    launcher, workers, _ = start_training(tmp_path)
    launcher.send_signal(sig)
    gone = seconds_until_gone(workers.values(), 15)
    assert launcher.wait(timeout=15) == 128 + sig
    print(f"{sig.name} to the launcher: workers gone after {gone:.2f} s")
    assert f"got {sig.name}; stopping all 2 processes" in (tmp_path / "stderr").read_text()


@pytest.mark.slow
@linux_only
def test_killing_the_launcher_takes_the_workers_down(tmp_path):
    """SIGKILL to the launcher (no handler runs): the workers' parent-death signal stops them.
    (They used to train on, orphaned, for minutes.)"""
    launcher, workers, _ = start_training(tmp_path)
    launcher.kill()
    launcher.wait()
    gone = seconds_until_gone(workers.values(), 15)
    print(f"SIGKILL to the launcher: workers gone after {gone:.2f} s")
    assert gone < 10


@pytest.mark.slow
@linux_only
def test_a_killed_worker_stops_the_launch_with_its_status(tmp_path):
    """A worker killed by SIGKILL: the launcher stops the other one at once and exits 137 = 128 + 9
    (it used to exit 247, Python's sys.exit(-9))."""
    launcher, workers, _ = start_training(tmp_path)
    os.kill(workers[1], signal.SIGKILL)
    start = time.monotonic()
    assert launcher.wait(timeout=30) == 128 + signal.SIGKILL
    returned = time.monotonic() - start
    gone = seconds_until_gone([workers[0]], 5)
    print(f"worker 1 killed: launcher returned after {returned:.2f} s, worker 0 gone after {returned + gone:.2f} s")
    assert returned < 10
    assert re.search(r"error: process 1 \(pid \d+\) was killed by SIGKILL; stopping the others",
                     (tmp_path / "stderr").read_text())


def start_direct(tmp_path, *args, env=None):
    """Two processes joined through TLJAX_* variables, as a cluster would start them: no launcher."""
    port = distributed_port()
    procs = []
    for i in range(2):
        penv = {**os.environ, **CPU, "TLJAX_COORDINATOR": f"127.0.0.1:{port}", "TLJAX_NUM_PROCESSES": "2",
                "TLJAX_PROCESS_ID": str(i), **(env or {})}
        penv.pop("TLJAX_LAUNCHER_PID", None)
        procs.append(subprocess.Popen([sys.executable, *args], cwd=ROOT, env=penv,
                                      stdout=open(tmp_path / f"out{i}", "w"), stderr=subprocess.STDOUT))
    return procs


def distributed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@linux_only
def test_a_worker_that_loses_its_peer_mid_training_stops_with_an_error(tmp_path):
    """No launcher: process 1 dies between checkpoints; process 0 fails in its next collective and
    stops at once with an ``error:`` line (it used to wait ~100 s in JAX's shutdown barrier)."""
    config = tmp_path / "runlocal_no_source.py"
    config.write_text(CONFIG_FILE)
    metrics = tmp_path / "run" / "metrics.jsonl"
    procs = start_direct(tmp_path, "-m", "tljax.run", "--config", str(config), *LONG_RUN, "--config.ckpt_every=1000",
                         "--workdir", str(tmp_path / "run"))

    def training():  # process 0 logged step 8: both are past their first collectives, between checkpoints
        return metrics.exists() and any(json.loads(line).get("step", 0) >= 8 for line in metrics.read_text().split("\n")
                                        if line.startswith("{") and line.endswith("}"))

    try:
        wait_until(lambda: training() or any(p.poll() is not None for p in procs), 180, "training at step 8")
        assert all(p.poll() is None for p in procs), (tmp_path / "out0").read_text()[-3000:]
        procs[1].kill()
        start = time.monotonic()
        status = procs[0].wait(timeout=30)
        took = time.monotonic() - start
    finally:
        for p in procs:
            p.kill()
            p.wait()
    out = (tmp_path / "out0").read_text()
    print(f"peer killed mid-training: process 0 exited {status} after {took:.2f} s")
    assert status != 0 and took < 15, out[-3000:]
    # tljax.distributed's line for an uncaught error, or the entry point's for an error it reports itself
    assert re.search(r"^error: .*(lost contact with another process|gloo|heartbeat)", out, re.M | re.I), out[-3000:]


IDLE_WORKER = """
import sys, time
from tljax import distributed
distributed.initialize(None)
import jax
jax.numpy.ones(2).block_until_ready()
print("up", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
@linux_only
def test_a_worker_that_loses_its_peer_outside_collectives_stops_after_the_heartbeat_timeout(tmp_path):
    """No collective to fail: JAX's heartbeat finds the dead peer, after the (configurable) timeout
    rather than JAX's default 100 s."""
    procs = start_direct(tmp_path, "-c", IDLE_WORKER, env={"TLJAX_HEARTBEAT_TIMEOUT_SECONDS": "3"})
    try:
        wait_until(lambda: all("up" in (tmp_path / f"out{i}").read_text() for i in range(2))
                   or any(p.poll() is not None for p in procs), 60, "both processes up")
        assert all(p.poll() is None for p in procs), (tmp_path / "out0").read_text()[-3000:]
        procs[1].kill()
        start = time.monotonic()
        status = procs[0].wait(timeout=30)
        took = time.monotonic() - start
    finally:
        for p in procs:
            p.kill()
            p.wait()
    out = (tmp_path / "out0").read_text()
    print(f"peer killed, heartbeat timeout 3 s: process 0 exited {status} after {took:.2f} s")
    assert status != 0 and took < 12, out[-3000:]
    assert "another task died" in out  # JAX's own words: it ends the process from its heartbeat thread


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
