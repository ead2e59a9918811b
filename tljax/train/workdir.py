"""The run's folder: writable, with room, and used by one run at a time.

``lock`` takes ``WORKDIR/.lock.<process index>`` with ``fcntl.flock``: the kernel drops the
lock when its holder exits, however it exits, so a lock left by a killed run is stale by
construction and taken over; a live holder is named in the error.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from typing import Optional

import jax


class WorkdirBusy(RuntimeError):
    """Another live run holds the workdir."""


def unwritable(folder: str) -> Optional[str]:
    """Why ``folder`` cannot be created or written to (a probe file is written and removed), or None."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write_test.{jax.process_index()}.{os.getpid()}")  # processes may share it
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        return str(e)
    return None


def check(workdir: str, min_free_mb: float) -> None:
    """Writable, with ``min_free_mb`` free on its disk: fails before anything is trained."""
    why = unwritable(workdir)
    if why:
        raise ValueError(f"workdir {workdir!r} is not writable ({why}); pick another --workdir")
    free_mb = shutil.disk_usage(workdir).free / 2**20
    if free_mb < min_free_mb:
        raise ValueError(f"workdir {workdir!r} has only {free_mb:,.0f} MB free on its disk; this run asks for at "
                         f"least config.min_free_mb={min_free_mb:,} MB for checkpoints and logs. Free some space, "
                         "pick another --workdir, or lower --config.min_free_mb")


class Lock:
    """Held from ``acquire`` until ``release`` or the process's end (``with Lock(workdir):``)."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, f".lock.{jax.process_index()}")
        self.fd = None

    def acquire(self) -> "Lock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise WorkdirBusy(
                f"workdir {os.path.dirname(self.path)!r} is in use by another run ({holder}); wait for it to finish, "
                "stop it, or pick another --workdir") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.remove(self.path)
            except OSError:
                pass
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
        return f"PID {info.get('pid')} on {info.get('host')}, started {info.get('started')}"
    except (OSError, ValueError):
        return "a process that has not written its PID yet"
