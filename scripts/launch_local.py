"""Start N cooperating JAX processes on this machine, as a multi-host job would.

    python scripts/launch_local.py -n 2 -- python -m tljax.run --config configs/digits_transfer.py:runlocal \
        --workdir runs/two

Each process gets ``TLJAX_COORDINATOR`` (a free local port), ``TLJAX_NUM_PROCESSES``,
``TLJAX_PROCESS_ID`` and ``TLJAX_LAUNCHER_PID``; ``tljax.distributed.initialize`` reads them.
Output lines are prefixed with ``[i]``.

No process outlives the job:

* one process fails or is killed: the others are stopped at once (they would otherwise wait
  for it in a collective until JAX's heartbeat timeout) and the exit status is that process's
  (``128 + signal`` when a signal killed it);
* SIGTERM, SIGINT (Ctrl-C) or SIGHUP to the launcher: every process gets SIGTERM, then SIGKILL
  after ``--grace`` seconds, and the launcher exits with ``128 + signal``;
* SIGKILL to the launcher (nothing can run then): on Linux each process was started with
  ``PR_SET_PDEATHSIG``, so the kernel kills it when the launcher dies; ``tljax.distributed``
  also notices that its parent changed and stops the process (the only guard elsewhere).

SIGTERM first, as a scheduler does: a process that has not joined JAX yet ends at once; one
that has ends at the SIGKILL, because JAX's preemption service catches SIGTERM as a preemption
notice and goes on. The parent-death signal is SIGKILL for the same reason.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def free_port() -> int:
    """A TCP port nothing listens on now (the coordinator binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(base: Dict[str, str], coordinator: str, n: int, i: int) -> Dict[str, str]:
    env = {**base, "TLJAX_COORDINATOR": coordinator, "TLJAX_NUM_PROCESSES": str(n), "TLJAX_PROCESS_ID": str(i),
           "TLJAX_LAUNCHER_PID": str(os.getpid())}
    env.setdefault("JAX_PLATFORMS", "cpu")  # a local launch shares this machine's CPU, not one GPU per process
    return env


def exit_status(returncode: Optional[int]) -> int:
    """A child's status as a shell reports it: the exit code, or 128 + N when signal N killed it."""
    if returncode is None:
        return 0
    return 128 - returncode if returncode < 0 else returncode


def describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with {returncode}"


def die_with_parent() -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when this process dies (even by SIGKILL).

    Not SIGTERM: once ``jax.distributed`` runs, JAX's preemption notifier catches SIGTERM.

    libc is loaded here, in the parent: the child, between fork and exec, only makes the call.
    None where there is no ``prctl`` (the worker's own parent check is then the only guard).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the launcher died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def pump(stream, prefix: str, out) -> None:
    """Copies ``stream`` to ``out`` line by line with ``prefix`` (a thread per process)."""
    try:
        for line in iter(stream.readline, ""):
            out.write(prefix + line)
            out.flush()
    except (OSError, ValueError):  # our own stdout went away: keep draining so the child never blocks
        for _ in iter(stream.readline, ""):
            pass
    finally:
        stream.close()


def first_failure(codes: Sequence) -> int:
    """The exit status to report: the first non-zero one (signals as 128 + N), else 0."""
    return next((exit_status(c) for c in codes if c not in (None, 0)), 0)


def stop(procs: List[subprocess.Popen], grace: float = 5.0) -> None:
    """SIGTERM every still-running process (its whole group), then SIGKILL after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while any(p.poll() is None for p in alive) and time.monotonic() < deadline:
            time.sleep(0.05)
    for p in procs:
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass


class Stopped(Exception):
    """The launcher received ``signum``: stop everything and exit with 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def launch(n: int, command: Sequence[str], env=None, grace: float = 5.0, poll: float = 0.05) -> int:
    """Runs ``command`` as ``n`` processes; returns 0 only if all of them succeed (see the module docstring)."""
    coordinator = f"127.0.0.1:{free_port()}"
    procs: List[subprocess.Popen] = []
    threads: List[threading.Thread] = []
    received: List[int] = []

    def on_signal(signum, frame):
        received.append(signum)
        if len(received) == 1:  # later ones (a second Ctrl-C while stopping) must not cut the cleanup short
            raise Stopped(signum)

    main_thread = threading.current_thread() is threading.main_thread()  # only it may set signal handlers
    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS} if main_thread else {}
    status = 0
    try:
        preexec = die_with_parent()
        for i in range(n):  # all children before any pump thread: preexec_fn must not race other threads
            procs.append(subprocess.Popen(list(command), env=process_env(dict(env or os.environ), coordinator, n, i),
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                          start_new_session=True, preexec_fn=preexec))
        for i, p in enumerate(procs):
            threads.append(threading.Thread(target=pump, args=(p.stdout, f"[{i}] ", sys.stdout), daemon=True))
            threads[-1].start()
        while any(p.poll() is None for p in procs):
            failed = [(i, p) for i, p in enumerate(procs) if p.poll() not in (None, 0)]
            if failed:
                i, p = failed[0]
                status = exit_status(p.returncode)
                print(f"launch_local: error: process {i} (pid {p.pid}) {describe(p.returncode)}; "
                      f"stopping the others", file=sys.stderr, flush=True)
                break
            time.sleep(poll)
    except Stopped as e:
        status = 128 + e.signum
        print(f"launch_local: got {signal.Signals(e.signum).name}; stopping all {len(procs)} processes",
              file=sys.stderr, flush=True)
    finally:
        try:
            stop(procs, grace)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    for t in threads:
        t.join(timeout=5)
    if received and not status:
        status = 128 + received[0]
    return status or first_failure([p.returncode for p in procs])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--num-processes", type=int, required=True)
    parser.add_argument("--grace", type=float, default=5.0,
                        help="seconds between SIGTERM and SIGKILL when stopping the processes (default 5)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command each process runs")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.num_processes < 1:
        parser.error("usage: launch_local.py -n N -- python -m tljax.run …")
    return launch(args.num_processes, command, grace=args.grace)


if __name__ == "__main__":
    sys.exit(main())
