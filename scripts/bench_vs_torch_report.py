"""bench_vs_torch's Markdown report, from the rows and metadata it writes to JSON.

Three tables: the ratios (tljax with and without the XLA:CPU kernels, each ÷ PyTorch eager NCHW
and ÷ the fastest PyTorch variant), every PyTorch variant's step time, and the costs (compile
time, FLOPs, MFU, memory); then the single-value rows and notes on how to read them.
"""

from __future__ import annotations

SIDES = ("kernels", "plain", "bf16")  # tljax: XLA:CPU kernels, plain Flax ops, plain ops in bfloat16
MALLOC_SAYS = {"jemalloc": "jemalloc keeping freed pages (LD_PRELOAD) for both frameworks",
               "keep": "glibc keeps freed memory (1 arena, no mmap, no trim) for both frameworks",
               "default": "malloc as it is"}


def ms(v) -> str:
    """Step milliseconds: thousands separated; GPU steps (a few ms) with one decimal; '–' when absent."""
    return "–" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def ratio_cell(s) -> str:
    """``**median** (95 % CI)``, or ``**median** [min–max]`` when too few rounds for a CI; '–' when absent."""
    if s is None:
        return "–"
    ci = s.get("ci95")
    return f"**{s['median']:.2f}** " + (f"({ci[0]:.2f}–{ci[1]:.2f})" if ci else f"[{s['min']:.2f}–{s['max']:.2f}]")


def pct(v) -> str:
    return "–" if v is None else f"{v:.0%}"


def timed_rows(rows):
    return [r for r in rows if r.get("tljax_ms") is not None]


def sides_of(rows):
    """The tljax sides the table shows: kernels and plain always ('–' where absent), bf16 when it ran."""
    return [s for s in SIDES if s != "bf16" or any(r.get("tljax_ms_bf16") is not None for r in rows)]


def ratio_table(rows):
    sides = sides_of(rows)
    head = [f"{s} ÷ {v}" for v in ("eager", "fastest") for s in sides]
    lines = [f"| step | tljax ms, {' / '.join(sides)} | PyTorch eager ms | fastest PyTorch, ms | " + " | ".join(head)
             + " |", "|---|---|---|---|" + "---|" * len(head)]
    for r in timed_rows(rows):
        best = r["torch_best"]
        cells = [ratio_cell(r["ratios"].get(side, {}).get(v)) for v in ("eager", best) for side in sides]
        lines.append(f"| {r['name']} | {' / '.join(ms(r.get(f'tljax_ms_{s}')) for s in sides)} "
                     f"| {ms(r['torch_variants_ms'].get('eager'))} | {best} {ms(r['torch_variants_ms'][best])} | "
                     + " | ".join(cells) + " |")
    return lines


def variant_table(rows):
    names = list(dict.fromkeys(v for r in timed_rows(rows) for v in r["torch_variants_ms"]))
    lines = ["| step | " + " | ".join(f"PyTorch {v}" for v in names) + " |", "|---|" + "---|" * len(names)]
    for r in timed_rows(rows):
        cells = [f"{ms(r['torch_variants_ms'][v])} ({r['torch_first_step_s'][v]:.1f} s)"
                 if v in r["torch_variants_ms"] else "–" for v in names]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return lines


def cost_table(rows, gpu: bool):
    sides = sides_of(rows)
    lines = [f"| step | tljax compile s, {' / '.join(sides)} | XLA GFLOP | MFU {' / '.join(sides)} / fastest PyTorch "
             "| peak RSS MiB tljax / PyTorch |" + (" GPU peak MiB tljax / PyTorch |" if gpu else ""),
             "|---|---|---|---|---|" + ("---|" if gpu else "")]
    for r in timed_rows(rows):
        compile_s = " / ".join("–" if r["tljax_compile_s"].get(s) is None else f"{r['tljax_compile_s'][s]:.1f}"
                               for s in sides)
        flops = f"{r['xla_gflop']:.1f}" if r["xla_gflop"] else "n/a"  # XLA:GPU counts no FLOPs before compiling
        mfu = " / ".join(pct(r["mfu"].get(k)) for k in (*sides, r["torch_best"])) if r["xla_gflop"] else "n/a"
        rss = r["peak_rss_mib"]
        tl = max(rss[s] for s in SIDES if s in rss)
        pt = max(v for k, v in rss.items() if k not in SIDES)
        gpu_cell = f" {r['tljax_gpu_peak_mib']:,.0f} / {r['torch_gpu_peak_mib']:,.0f} |" if gpu else ""
        lines.append(f"| {r['name']} | {compile_s} | {flops} | {mfu} | {tl:,.0f} / {pt:,.0f} |" + gpu_cell)
    return lines


def markdown(rows, meta) -> str:
    gpu = any("tljax_gpu_peak_mib" in r for r in rows)
    lines = [f"# tljax vs PyTorch, one run ({meta['date']})", "", f"Machine: {meta['machine']}; peak: {meta['peak_how']}.",
             f"Versions: {meta['versions']}. Timing: {meta['timing']}.", f"Memory: {meta['malloc']}.", "",
             "tljax's step with the XLA:CPU kernels (`cpu_kernels=on`) and with plain Flax ops (`off`), ÷ PyTorch: "
             "medians of per-round ratios, 95% CI of the median in parentheses ([min–max] when the rounds are too "
             "few for one); `fastest` is the PyTorch variant that beat tljax's step by most in the same rounds.", ""]
    lines += ratio_table(rows) + ["", "PyTorch step ms per variant (first step, compile included, in parentheses):",
                                  ""] + variant_table(rows) + [""] + cost_table(rows, gpu) + [""]
    for r in rows:
        if r.get("tljax_ms") is None and "value" in r:
            extra = f" (PyTorch: {r['torch_value']:.2f})" if r.get("torch_value") is not None else ""
            lines.append(f"- {r['name']}: **{r['value']:.3g}**{extra}")
    lines.append("\nMFU divides the FLOPs XLA counts for tljax's plain step (the model's nominal FLOPs) by each step's "
                 "time and the peak, so every MFU column counts the same work; the kernels' Winograd convolutions do "
                 "fewer multiplies, so theirs is an effective rate (the JSON's `xla_gflop_kernels` is their count).")
    lines.append("Peak RSS is the whole process (both frameworks' models resident) during that side's steps. The JSON's "
                 "`step_rss_mib` is the rise above the RSS before the step; allocators that keep freed memory "
                 "mapped show ≈ 0 there, so it does not compare the two.")
    if gpu:
        lines.append("On GPU the kernels are off (they are XLA:CPU forms). GPU peak is each framework's own "
                     "allocator's high-water mark: PyTorch's for that row, JAX's for the process so far.")
    if meta.get("malloc_kept"):
        lines.append("With freed memory kept in the process, both peak RSS columns show the process's peak so far, "
                     "not one framework's.")
    return "\n".join(lines) + "\n"
