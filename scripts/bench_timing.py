"""Timing and statistics shared by the benchmark scripts: peak FLOP/s of the machine, one call's
milliseconds and RSS, round-robin repetitions of several steps, and the median of per-round
ratios with a distribution-free 95 % confidence interval.

Absolute step times drift between runs (shared/design/PERFORMANCE_NOTES.md); ratios of steps
timed in the same round do not, so every comparison here is a median of per-round ratios.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import time
from typing import Callable, Dict, List, Optional

MIB = 1024.0  # KiB per MiB: /proc/self/status counts KiB


def proc_status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", open("/proc/self/status").read()).group(1))


def reset_peak_rss() -> None:
    """Resets VmHWM (Linux ≥ 4.0), so the next peak belongs to the next step alone."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def cpu_peak(cpuinfo: str, flags, cores: int, ghz=None):
    """fp32 peak FLOP/s = cores × GHz × FMA units × SIMD lanes × 2, and how it was computed.

    Lanes come from the ISA flags (avx512f: 16, avx2: 8, else 4); 2 FMA units is the figure for
    the AVX-512 server cores this runs on (flags cannot tell 1 from 2).
    """
    source = "--ghz"
    if ghz is None:
        named = re.search(r"@\s*([\d.]+)\s*GHz", cpuinfo)  # the nominal clock in the model name, else cpu MHz
        source = "model name" if named else "cpu MHz"
        ghz = float(named.group(1)) if named else float(re.search(r"cpu MHz\s*:\s*([\d.]+)", cpuinfo).group(1)) / 1e3
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fma = 2 if "fma" in flags else 1
    peak = cores * ghz * 1e9 * fma * lanes * 2
    how = (f"{cores} cores × {ghz:.2f} GHz × {fma} FMA units × {lanes} fp32 lanes × 2 FLOP "
           f"= {peak / 1e9:.0f} GFLOP/s (GHz from {source}; flags from /proc/cpuinfo; cores os.sched_getaffinity)")
    return peak, how


# Dense TensorFloat-32 tensor-core peaks (NVIDIA datasheets, SXM parts), TFLOP/s.
GPU_TF32_PEAK_TFLOPS = {"H100": 494.7, "H200": 494.7, "A100": 156.0}


def gpu_peak(name: str, tflops=None):
    """TF32 dense peak of the card named ``name`` (or ``tflops``), and how it was found."""
    if tflops is None:
        tflops = next((v for k, v in GPU_TF32_PEAK_TFLOPS.items() if k in name), None)
        if tflops is None:
            raise SystemExit(f"no TF32 peak known for GPU {name!r}: pass --peak-tflops")
        return tflops * 1e12, f"{name}: {tflops} TFLOP/s TF32 dense (NVIDIA datasheet)"
    return tflops * 1e12, f"{name}: {tflops} TFLOP/s (--peak-tflops)"


def machine_peak(ghz=None):
    text = open("/proc/cpuinfo").read()
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split())
    return cpu_peak(text, flags, len(os.sched_getaffinity(0)), ghz)


def timed(fn):
    """Milliseconds of one call, the peak RSS it reached and how far above the RSS before it (MiB)."""
    reset_peak_rss()
    before = proc_status_kib("VmRSS")
    start = time.perf_counter()
    fn()
    ms = (time.perf_counter() - start) * 1e3
    peak = proc_status_kib("VmHWM")
    return ms, (peak / MIB, (peak - before) / MIB)


def rounds(runs: Dict[str, Callable[[], None]], warmup: int, reps: int) -> Dict[str, dict]:
    """Round-robin repetitions: ``warmup`` untimed rounds, then ``reps`` timed ones, each calling
    every step once, the first of the order rotating from round to round (no step always runs
    after the same one). Per step: ``ms`` (one per timed round, in round order), ``first_ms``
    (the first warm-up call), ``peak_rss_mib`` and ``step_rss_mib`` (the largest peak, and that
    call's rise above the RSS before it)."""
    names = list(runs)
    out = {name: {"ms": [], "first_ms": None, "rss": (0.0, 0.0)} for name in names}
    for r in range(warmup + reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            ms, rss = timed(runs[name])
            if out[name]["first_ms"] is None:
                out[name]["first_ms"] = ms
            if r >= warmup:
                out[name]["ms"].append(ms)
                out[name]["rss"] = max(out[name]["rss"], rss)
    return {name: {"ms": o["ms"], "first_ms": o["first_ms"], "peak_rss_mib": o["rss"][0],
                   "step_rss_mib": o["rss"][1]} for name, o in out.items()}


def median_interval(values, level: float = 0.95):
    """Distribution-free confidence interval of the median: the order statistics ``k`` and ``n-k+1``
    with ``P(Binomial(n, ½) < k) ≤ (1 - level) / 2``; None when ``n`` is too small for ``level``."""
    xs, n = sorted(values), len(values)
    k, below = 0, 0.0
    while k < n and below + math.comb(n, k) / 2**n <= (1 - level) / 2:
        below += math.comb(n, k) / 2**n
        k += 1
    return [xs[k - 1], xs[n - k]] if k else None


def ratio_summary(a_ms: List[float], b_ms: List[float]) -> dict:
    """A/B from per-round times: the median of the per-round ratios, their min and max, and the
    95 % confidence interval of that median (None with fewer than 6 rounds)."""
    ratios = [a / b for a, b in zip(a_ms, b_ms)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "ci95": median_interval(ratios)}


def fastest(ratios: Dict[str, dict]) -> Optional[str]:
    """Of ``{variant: ratio_summary(tljax, variant)}``, the variant with the highest median ratio:
    the one that beat tljax's step by most in the same rounds, so ``ratio_best ≥ ratio_eager``."""
    return max(ratios, key=lambda v: ratios[v]["median"]) if ratios else None
