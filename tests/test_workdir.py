"""One run per workdir: a live holder is named, a lock left by a killed run is taken over."""

import os
import subprocess
import sys

import pytest

from tljax.train import workdir

from conftest import run_train


def test_second_run_in_a_busy_workdir_refuses_naming_the_first(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from tljax.train import workdir; workdir.Lock(sys.argv[1]).acquire(); "
        "print('held', flush=True); time.sleep(120)"), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_train(tmp_path, "--config.compilation_cache=", check=False)
        assert result.returncode == 1
        assert f"is in use by another run (PID {holder.pid}" in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "source").exists() and not (tmp_path / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    with workdir.Lock(str(tmp_path)):  # the holder was SIGKILLed: its lock is stale and taken over
        with pytest.raises(workdir.WorkdirBusy, match=f"PID {os.getpid()}"):
            workdir.Lock(str(tmp_path)).acquire()  # a second lock in this process is refused too
    assert not os.path.exists(tmp_path / ".lock.0")  # released


def test_unwritable_or_full_workdir_is_refused(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is not writable"):
        workdir.check(str(blocker / "run"), 1)
    with pytest.raises(ValueError, match="MB free.*min_free_mb"):
        workdir.check(str(tmp_path / "ok"), 1e15)
    workdir.check(str(tmp_path / "ok"), 1)
