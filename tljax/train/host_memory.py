"""The process's malloc for a training run: keep freed memory for the next step, and use jemalloc
where it is installed.

XLA:CPU mallocs each step's temporaries (gigabytes for ResNet-50) and frees them after the
step; glibc returns such blocks to the kernel (mmap/munmap, per-thread arenas that shrink),
so the next step touches fresh pages again: ~590,000 page faults and ~1 s of kernel time per
ResNet-50 step on 2 cores. One arena, no mmap and no trimming keep the memory for reuse
(``keep``): 0 faults, step 3.31 → 2.83 s (the same script run both ways).

That heap is then gigabytes of free blocks of every size, and XLA:CPU's runtime also mallocs
≈ 10,000 scratch blocks per ResNet-50 step (YNNPACK's buffers, oneDNN's GEMM workspaces): glibc
spent 4 % of all CPU time of the step finding them a place (``perf``: ``_int_malloc``). jemalloc,
told to keep freed pages (``JEMALLOC_CONF``), has neither cost: ResNet-50's step took 2,334 instead
of 2,511 ms (medians over 5 and 4 alternating processes) at 3.3–4.8 GB peak RSS instead of 3.1,
and 0.86 and 0.88 of PyTorch's in ``scripts/bench_vs_torch.py`` (the last two runs on glibc: 0.93
and 0.95), PyTorch's step unchanged; all on a Zen 4 (AVX-512). On a Zen 3 (AVX2) glibc, jemalloc
and tcmalloc timed within the noise of each other (PERFORMANCE.md). It must be loaded when the
process starts, so ``configure(..., restart=True)`` (what ``python -m tljax.train`` and the
benchmarks do) starts the same command again with ``LD_PRELOAD`` set; a process that cannot
restart keeps glibc. The price of both: the process keeps its peak memory until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

from tljax.config import CHOICES

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


def configure(mode: str = "auto", restart: bool = False) -> str:
    """Applies ``config.host_malloc``; returns what the process runs on: ``'jemalloc'``, ``'keep'``
    (glibc keeping freed memory) or ``'default'`` (malloc as it was).

    ``auto``: jemalloc if it is loaded or can be, else ``keep``. ``jemalloc``: the same, but an
    error when it is neither. Call it first thing in the process: threads that have already
    allocated keep their glibc arenas. ``restart=True`` lets it replace the process by the same
    command under jemalloc (``os.execve``); only a command line's own entry point should.
    """
    global _configured
    _configured = _configure(mode, restart)
    return _configured


def _configure(mode: str, restart: bool) -> str:
    if mode not in MODES:
        raise ValueError(f"host_malloc={mode!r}: use one of {MODES}: 'auto' (jemalloc when installed, else "
                         f"'keep'), 'jemalloc', 'keep' (glibc reuses freed memory, fewer page faults) or 'default'")
    if mode == "default":
        return "default"
    if mode in ("auto", "jemalloc"):
        if jemalloc_loaded():
            return "jemalloc"
        path = jemalloc_path()
        if path and restart and not os.environ.get(RESTARTED_ENV):
            restart_under_jemalloc(path)  # does not return
        if mode == "jemalloc" and not path:
            raise ValueError(f"host_malloc='jemalloc': no libjemalloc found; {INSTALL_HINT}, or use host_malloc='keep'")
        if mode == "jemalloc":
            raise ValueError(f"host_malloc='jemalloc': {path} is not loaded in this process; start it with "
                             f"`python -m tljax.train` (which restarts under it) or with LD_PRELOAD={path} "
                             f"MALLOC_CONF={JEMALLOC_CONF}, or use host_malloc='keep'")
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
