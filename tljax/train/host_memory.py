"""glibc malloc settings for a training process: keep freed memory for the next step.

XLA:CPU mallocs each step's temporaries (gigabytes for ResNet-50) and frees them after the
step; glibc returns such blocks to the kernel (mmap/munmap, per-thread arenas that shrink),
so the next step touches fresh pages again: ~590,000 page faults and ~1 s of kernel time per
ResNet-50 step on 2 cores. One arena, no mmap and no trimming keep the memory for reuse:
0 faults, step 3.31 → 2.83 s (the same script run both ways). The price: the process keeps
its peak memory until it exits. PyTorch gains from the same settings (``bench_vs_torch.py
--malloc``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

from tljax.config import CHOICES

MODES = CHOICES["host_malloc"]
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's mallopt parameters
KEEP = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))  # -1: never trim


def configure(mode: str = "keep") -> bool:
    """Applies ``config.host_malloc`` (``'keep'`` or ``'default'``); True when malloc changed.

    Call it first thing in the process: threads that have already allocated keep their own
    arenas. Without glibc (macOS, musl) it changes nothing and returns False.
    """
    if mode not in MODES:
        raise ValueError(f"host_malloc={mode!r}: use 'keep' (reuse freed memory, fewer page faults) "
                         f"or 'default' (leave malloc as it is)")
    if mode == "default" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all([mallopt(param, value) == 1 for param, value in KEEP])
