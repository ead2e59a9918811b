"""No process outlives its job: a stopped or killed launcher takes its workers down, a killed
worker stops the launch with its status, and a worker that loses its peer exits promptly with an
``error:`` line (``scripts/launch_local.py``, ``tljax.distributed``).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from test_distributed import CONFIG_FILE, CPU, LAUNCH, SAME_START, launch

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


