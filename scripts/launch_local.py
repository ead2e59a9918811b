"""Start N cooperating JAX processes on this machine, as a multi-host job would.

    python scripts/launch_local.py -n 2 -- python -m tljax.train --config configs/digits_transfer.py:runlocal \
        --workdir runs/two

Each process gets ``TLJAX_COORDINATOR`` (a free local port), ``TLJAX_NUM_PROCESSES`` and
``TLJAX_PROCESS_ID``; ``tljax.distributed.initialize`` reads them. Output lines are prefixed
with ``[i]``. If one process fails, the others are killed (they would otherwise wait for it
in a collective until JAX's heartbeat timeout); the exit status is the first failure's.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Sequence


def free_port() -> int:
    """A TCP port nothing listens on now (the coordinator binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(base: Dict[str, str], coordinator: str, n: int, i: int) -> Dict[str, str]:
    env = {**base, "TLJAX_COORDINATOR": coordinator, "TLJAX_NUM_PROCESSES": str(n), "TLJAX_PROCESS_ID": str(i)}
    env.setdefault("JAX_PLATFORMS", "cpu")  # a local launch shares this machine's CPU, not one GPU per process
    return env


def pump(stream, prefix: str, out) -> None:
    """Copies ``stream`` to ``out`` line by line with ``prefix`` (a thread per process)."""
    for line in iter(stream.readline, ""):
        out.write(prefix + line)
        out.flush()
    stream.close()


def first_failure(codes: Sequence) -> int:
    """The exit status to report: the first non-zero one, else 0."""
    return next((c for c in codes if c not in (None, 0)), 0)


def stop(procs: List[subprocess.Popen], grace: float = 5.0) -> None:
    """SIGTERM every still-running process (its whole group), then SIGKILL after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while any(p.poll() is None for p in alive) and time.time() < deadline:
            time.sleep(0.1)


def launch(n: int, command: Sequence[str], env=None) -> int:
    """Runs ``command`` as ``n`` processes; returns 0 only if all of them succeed."""
    coordinator = f"127.0.0.1:{free_port()}"
    procs, threads = [], []
    for i in range(n):
        p = subprocess.Popen(list(command), env=process_env(dict(env or os.environ), coordinator, n, i),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                             start_new_session=True)
        t = threading.Thread(target=pump, args=(p.stdout, f"[{i}] ", sys.stdout), daemon=True)
        t.start()
        procs.append(p)
        threads.append(t)
    failed = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = first_failure([p.poll() for p in procs])
            if failed:
                bad = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
                print(f"launch_local: process {bad[0]} exited with {failed}; stopping the others", file=sys.stderr)
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        failed = 130
    finally:
        stop(procs)
        for t in threads:
            t.join(timeout=5)
    return failed or first_failure([p.returncode for p in procs])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--num-processes", type=int, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command each process runs")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.num_processes < 1:
        parser.error("usage: launch_local.py -n N -- python -m tljax.train …")
    return launch(args.num_processes, command)


if __name__ == "__main__":
    sys.exit(main())
