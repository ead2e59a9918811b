"""The process's malloc for a training run (``config.host_malloc``).

XLA:CPU mallocs each step's temporaries (gigabytes for ResNet-50) and frees them after the
step; glibc gives such blocks back to the kernel, so the next step page-faults them in again.
``keep`` (the default) tells glibc to keep freed memory for reuse: one arena, no mmap, no
trimming. ``jemalloc`` (opt-in) re-executes the command under jemalloc told to keep freed
pages, and says so; it must be loaded at process start, hence the restart. ``default`` leaves
malloc alone. The price of ``keep`` and ``jemalloc``: the process holds its peak memory until
it exits. Measurements: PERFORMANCE.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

from tljax.defaults import CHOICES

MODES = CHOICES["host_malloc"]
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's mallopt parameters
KEEP = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))  # -1: never trim
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"  # never give freed pages back: no faults next step
JEMALLOC_ENV = "TLJAX_JEMALLOC"  # path of libjemalloc to use instead of the system's; empty: none
RESTARTED_ENV = "TLJAX_MALLOC_RESTARTED"  # set on the restarted process, so it never restarts twice
INSTALL_HINT = "install it (Debian/Ubuntu: apt install libjemalloc2; conda: conda install jemalloc)"
_configured = None  # what configure() set up in this process


def runs_on():
    """``'jemalloc'``, ``'keep'``, ``'default'``, or None when ``configure`` was not called (e.g. a notebook)."""
    return "jemalloc" if jemalloc_loaded() else _configured


def configure(mode: str = "keep", restart: bool = False) -> str:
    """Applies ``config.host_malloc``; returns what the process runs on: ``'jemalloc'``, ``'keep'``
    (glibc keeping freed memory) or ``'default'`` (malloc as it was).

    Call it first thing in the process: threads that have already allocated keep their glibc
    arenas. ``jemalloc`` with ``restart=True`` replaces the process by the same command under
    jemalloc (``os.execve``); only a command line's own entry point should pass it.
    """
    global _configured
    _configured = _configure(mode, restart)
    return _configured


def _configure(mode: str, restart: bool) -> str:
    if mode not in MODES:
        raise ValueError(f"host_malloc={mode!r}: use one of {MODES}: 'keep' (glibc reuses freed memory, fewer page "
                         "faults), 'jemalloc' (restart the command under jemalloc) or 'default'")
    if mode == "default":
        return "default"
    if mode == "jemalloc":
        if jemalloc_loaded():
            return "jemalloc"
        path = jemalloc_path()
        if not path:
            raise ValueError(f"host_malloc='jemalloc': no libjemalloc found; {INSTALL_HINT}, or use host_malloc='keep'")
        if restart and not os.environ.get(RESTARTED_ENV):
            print(f"host_malloc='jemalloc': restarting this command with LD_PRELOAD={path} "
                  f"MALLOC_CONF={JEMALLOC_CONF}", flush=True)
            restart_under_jemalloc(path)  # does not return
        raise ValueError(f"host_malloc='jemalloc': {path} is not loaded in this process; start it with "
                         f"LD_PRELOAD={path} MALLOC_CONF={JEMALLOC_CONF}, or use host_malloc='keep'")
    return "keep" if keep_freed_memory() else "default"


def keep_freed_memory() -> bool:
    """glibc: one arena, no mmap, no trimming. False without glibc (macOS, musl) or under another malloc."""
    if platform.libc_ver()[0] != "glibc" or jemalloc_loaded():
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all([mallopt(param, value) == 1 for param, value in KEEP])


def jemalloc_path():
    """The libjemalloc to load: ``$TLJAX_JEMALLOC`` when set (empty: none), else the system's, else None."""
    if JEMALLOC_ENV in os.environ:
        path = os.environ[JEMALLOC_ENV]
        return path if path and os.path.exists(path) else None
    return ctypes.util.find_library("jemalloc") if sys.platform.startswith("linux") else None


def jemalloc_loaded() -> bool:
    """Whether this process's malloc is jemalloc (a library mapped into it)."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libjemalloc" in line for line in maps)
    except OSError:
        return False


def restart_under_jemalloc(path: str) -> None:
    """Runs this process's command line again with jemalloc preloaded and told to keep freed pages."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(p for p in (path, env.get("LD_PRELOAD", "")) if p)
    env["MALLOC_CONF"] = ",".join(c for c in (env.get("MALLOC_CONF", ""), JEMALLOC_CONF) if c)
    env[RESTARTED_ENV] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)
