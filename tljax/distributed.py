"""Multi-process start-up: ``initialize(config)`` before any other JAX call.

Where the coordinator, process count and process id come from, first match wins:

1. ``config.distributed.{coordinator_address, num_processes, process_id}`` (all optional);
2. the environment: ``TLJAX_COORDINATOR``, ``TLJAX_NUM_PROCESSES``, ``TLJAX_PROCESS_ID``
   (what ``scripts/launch_local.py`` sets);
3. a cluster JAX detects by itself (SLURM, Open MPI, Cloud TPU, Kubernetes):
   ``jax.distributed.initialize()`` with no arguments.

Nothing found, or one process: a no-op, so single-machine runs need no setup. On CPU the
cross-process collectives go through gloo (the CPU client has none otherwise).

A process that loses another one stops within seconds, not minutes (JAX's defaults are a 100 s
heartbeat and a 300 s shutdown barrier):

* JAX declares a process dead after ``heartbeat_timeout_seconds`` without a heartbeat and
  then terminates the others; ``shutdown_timeout_seconds`` bounds the wait for the others at
  exit (``TIMEOUTS`` below: ``config.distributed.<name>``, else ``TLJAX_<NAME>``, else the default);
* an uncaught exception (e.g. a collective whose peer vanished) prints ``error: …`` naming
  what happened and ends the process at once instead of waiting in JAX's shutdown barrier
  for processes that may be gone;
* under ``scripts/launch_local.py`` (``TLJAX_LAUNCHER_PID``) a process whose launcher died
  stops itself (on Linux the kernel kills it first, see the launcher).

SIGTERM ends a process after ``initialize`` as before it: JAX's preemption service (which would
catch it as a notice) is turned off, so a scheduler's stop is a stop and the run resumes from its
last checkpoint.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import traceback
from typing import Any, Dict, Mapping, Optional

import jax

FIELDS = ("coordinator_address", "num_processes", "process_id")
ENV = {"coordinator_address": "TLJAX_COORDINATOR", "num_processes": "TLJAX_NUM_PROCESSES",
       "process_id": "TLJAX_PROCESS_ID"}


# seconds, where neither config.distributed.<name> (0: unset) nor TLJAX_<NAME> gives one
TIMEOUTS = {
    "initialization_timeout": 300,  # for every process to connect at start (processes may start minutes apart)
    "heartbeat_timeout_seconds": 10,  # a process silent this long is declared dead and the job stops
    "shutdown_timeout_seconds": 60,  # at exit, for the others to finish too (a healthy job differs by seconds)
}
TIMEOUT_ENV = {name: "TLJAX_" + name.upper() for name in TIMEOUTS}
LAUNCHER_ENV = "TLJAX_LAUNCHER_PID"  # set by scripts/launch_local.py
# what a lost peer looks like from this process: gloo's broken connection, the coordination service's verdict
PEER_LOST = re.compile(r"gloo|connection (closed|reset|refused)|broken pipe|heartbeat|coordination|barrier"
                       r"|unavailable|deadline_exceeded|socket closed", re.IGNORECASE)


def explicit_settings(config=None, environ: Mapping[str, str] = os.environ) -> Dict[str, Any]:
    """The fields given by ``config.distributed`` or, per field, by the environment; unset ones absent."""
    section = (config["distributed"] if config is not None else None) or {}
    found: Dict[str, Any] = {}
    for field in FIELDS:
        value = section.get(field) if hasattr(section, "get") else None
        if value in (None, "", -1):
            value = environ.get(ENV[field]) or None
        if value is not None:
            found[field] = value if field == "coordinator_address" else int(value)
    return found


def timeouts(config=None, environ: Mapping[str, str] = os.environ) -> Dict[str, int]:
    """``TIMEOUTS`` overridden by ``config.distributed.<name>``, else by ``TLJAX_<NAME>``."""
    section = (config["distributed"] if config is not None else None) or {}
    found = {}
    for name, default in TIMEOUTS.items():
        value = section.get(name) if hasattr(section, "get") else None
        if value in (None, "", 0):
            value = environ.get(TIMEOUT_ENV[name]) or default
        found[name] = int(value)
        if found[name] <= 0:
            raise ValueError(f"distributed {name} must be a positive number of seconds, got {value!r}")
    return found


# Environment variables that mark a cluster jax.distributed.initialize() configures itself from
# (the presence tests of JAX's SLURM, Open MPI, Kubernetes job and Cloud TPU detectors).
CLUSTER_MARKERS = {"SlurmCluster": ("SLURM_JOB_ID",), "OmpiCluster": ("OMPI_MCA_orte_hnp_uri",),
                   "K8sCluster": ("KUBERNETES_SERVICE_HOST", "JOB_COMPLETION_INDEX"),
                   "TpuCluster": ("TPU_WORKER_HOSTNAMES",)}


def detected_cluster(environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """The name of a cluster environment JAX would auto-configure from, or None."""
    return next((name for name, keys in CLUSTER_MARKERS.items() if all(k in environ for k in keys)), None)


def plan(config=None, environ: Mapping[str, str] = os.environ, cluster: Optional[str] = None) -> Optional[Dict]:
    """Keyword arguments for ``jax.distributed.initialize``, or None for a single process.

    Pure, so the decision is testable without starting anything.
    """
    settings = explicit_settings(config, environ)
    if settings.get("num_processes", 0) > 1:
        missing = [ENV[f] for f in FIELDS if f not in settings]
        if missing:
            raise ValueError(f"{settings['num_processes']} processes need a coordinator address and a process "
                             f"id as well; set config.distributed.* or {', '.join(missing)}")
        if not 0 <= settings["process_id"] < settings["num_processes"]:
            raise ValueError(f"process_id {settings['process_id']} is outside [0, {settings['num_processes']})")
        return settings
    if settings.get("num_processes") == 1 or cluster is None:
        return None
    return {}  # the cluster supplies every argument


def initialize(config=None) -> int:
    """Joins the job's processes (see the module docstring). Returns ``jax.process_count()``.

    Must run before anything touches a JAX device; calling it twice is harmless.
    """
    if jax.distributed.is_initialized():
        return jax.process_count()
    kwargs = plan(config, os.environ, detected_cluster())
    if kwargs is None:
        return 1
    if jax.config.jax_cpu_collectives_implementation != "mpi":  # keep a user's explicit MPI
        # Only the CPU client reads this; GPU/TPU use NCCL/ICI whatever it says.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # SIGTERM (a scheduler's or the launcher's stop) ends the process, to resume from its last checkpoint;
    # JAX's preemption service would catch it as a notice the loop does not poll, and go on.
    jax.config.update("jax_enable_preemption_service", False)
    limits = timeouts(config)
    watch_launcher()  # before connecting: a launcher already gone must not leave us waiting for peers
    jax.distributed.initialize(**kwargs, **limits)
    stop_on_uncaught_exception(jax.process_index(), jax.process_count(), limits["heartbeat_timeout_seconds"])
    return jax.process_count()


def _stop(message: str, status: int = 1) -> None:
    """Prints ``message`` (if anyone still reads it) and ends the process now, without atexit handlers."""
    try:
        print(message, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # the launcher that read our output is gone
        pass
    os._exit(status)


def watch_launcher(environ: Mapping[str, str] = os.environ, interval: float = 0.5) -> Optional[threading.Thread]:
    """Under ``scripts/launch_local.py``: stops this process when the launcher dies.

    Linux's parent-death signal (set by the launcher) normally does it first; this is the fallback
    where there is none. Watches only when the launcher is this process's parent: a process that a
    worker starts inherits the variable but has another parent.
    """
    value = environ.get(LAUNCHER_ENV, "")
    if not value.isdigit():
        return None
    launcher = int(value)
    if os.getppid() != launcher:
        try:
            os.kill(launcher, 0)
            return None  # alive: we are some worker's child, not the launcher's
        except ProcessLookupError:
            _stop(f"error: the launcher (pid {launcher}) that started this process is gone; stopping")
        except PermissionError:
            return None

    def watch():
        while os.getppid() == launcher:
            time.sleep(interval)
        _stop(f"error: the launcher (pid {launcher}) that started this process is gone; stopping")

    thread = threading.Thread(target=watch, name="tljax-launcher-watch", daemon=True)
    thread.start()
    return thread


def peer_lost_message(error: BaseException, process_id: int, num_processes: int, heartbeat_timeout: int) -> str:
    """The ``error:`` line for an uncaught exception of a multi-process run."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    if PEER_LOST.search(f"{type(error).__name__} {error}"):
        return (f"error: process {process_id} of {num_processes} lost contact with another process of the job "
                f"({text}); stopping. The process that failed first says why (JAX declares a silent process dead "
                f"after {heartbeat_timeout} s: distributed heartbeat_timeout_seconds)")
    return (f"error: process {process_id} of {num_processes} failed: {type(error).__name__}: {text}; stopping "
            f"(the other processes stop when they next need this one)")


def stop_on_uncaught_exception(process_id: int, num_processes: int, heartbeat_timeout: int) -> None:
    """An uncaught exception prints its traceback, an ``error:`` line, and ends the process at once.

    Python would otherwise run JAX's atexit shutdown, a barrier that waits for every other
    process: until the heartbeat timeout when one is gone, and while this one waits alive there,
    the others, blocked in a collective that needs it, cannot fail either.
    """
    previous = sys.excepthook

    def hook(kind, error, tb):
        try:
            previous(kind, error, tb)
        except Exception:  # noqa: BLE001 (a broken hook must not keep the process alive)
            traceback.print_exception(kind, error, tb)
        _stop(peer_lost_message(error, process_id, num_processes, heartbeat_timeout))

    sys.excepthook = hook
