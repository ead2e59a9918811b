"""Peak memory of one train step per freezing strategy and memory option, each in a fresh process.

    python scripts/bench_memory.py --out runs/bench_memory           # ResNet-50, batch 16, 224²: ≈ 5 min on 2 cores
    python scripts/bench_memory.py --out /tmp/m --quick              # tiny ResNet: checks the script

Each configuration (full fine-tuning, frozen backbone, LoRA, full FT with ``remat``, full FT with
``grad_accum=4``) runs in its own process so no other step's buffers or allocator history count.
The step is the library's own (``bench_options.compiled_step``: ``T.prepare`` + ``make_train_step``
+ ``compile_train_step``). Per configuration:

- CPU: the process's resident set before the first step (parameters, optimizer state and batch
  in place, the step compiled), and its high-water mark over ``--steps`` steps, with the mark reset
  after compiling (``/proc/self/clear_refs``), so the compiler's own peak does not count;
  ``step_peak_mib`` = high-water − resident before: what the step adds. glibc keeps freed memory
  (``host_malloc=keep``, as ``python -m tljax.run``).
- GPU: the device allocator's ``peak_bytes_in_use`` (JAX cannot reset it; a fresh process per
  configuration makes it this step's).
- XLA's plan of the compiled step (``memory_analysis``): arguments, temporaries, donated bytes.

``frozen_over_full`` is the frozen backbone's peak over full fine-tuning's (the issue's goal ≤ 0.6).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MIB = 2 ** 20
CONFIGS = {  # name -> (strategy, config fields)
    "full_ft": ("full_ft", {}),
    "frozen_backbone": ("linear_probe", {}),
    "lora:8": ("lora:8", {}),
    "full_ft, remat": ("full_ft", {"remat": True}),
    "full_ft, grad_accum=4": ("full_ft", {"grad_accum": 4}),
}


def status_mib(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from /proc/self/status, MiB."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_one(name: str, arch: str, batch_size: int, size: int, steps: int) -> dict:
    """Builds, compiles and runs ``name``'s step in this process; its memory figures."""
    import jax
    import numpy as np

    from bench_options import base_config, compiled_step
    from tljax.train import host_memory

    host_memory.configure("keep", restart=False)
    strategy, fields = CONFIGS[name]
    config = base_config(arch, {"widths": (8, 16, 32)} if arch == "resnet_digits" else {})
    config.update(fields)
    rng = np.random.default_rng(0)
    batch = {"image": rng.standard_normal((batch_size, size, size, 3)).astype(np.float32),
             "label": (np.arange(batch_size) % 10).astype(np.int32)}
    run, seconds, _, plan = compiled_step(config, batch, strategy=strategy)  # runs no step yet
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark to the current resident set
    before = status_mib("VmRSS")
    for _ in range(steps):
        run()
    peak = status_mib("VmHWM")
    gpu = jax.devices()[0].memory_stats() if jax.default_backend() == "gpu" else None
    return {"config": name, "strategy": strategy, **fields, "compile_s": seconds, "rss_before_mib": before,
            "process_peak_mib": peak, "step_peak_mib": peak - before,
            "gpu_peak_mib": gpu["peak_bytes_in_use"] / MIB if gpu else None,
            "xla_argument_mib": plan.argument_size_in_bytes / MIB if plan else None,
            "xla_temp_mib": plan.temp_size_in_bytes / MIB if plan else None,
            "xla_donated_mib": plan.alias_size_in_bytes / MIB if plan else None}


def markdown(rows, meta) -> str:
    lines = [f"# Peak memory per strategy, one process each ({meta['date']})", "",
             f"Machine: {meta['machine']}. Versions: {meta['versions']}. Step: {meta['step']}.", "",
             "| configuration | step adds MiB | process peak MiB | GPU peak MiB | XLA temp MiB | XLA arguments MiB |",
             "|---|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None else f"{v:,.0f}"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['config']} | {fmt(r['step_peak_mib'])} | {fmt(r['process_peak_mib'])} | "
                     f"{fmt(r['gpu_peak_mib'])} | {fmt(r['xla_temp_mib'])} | {fmt(r['xla_argument_mib'])} |")
    lines += ["", f"Frozen backbone ÷ full fine-tuning: step memory **{meta['frozen_over_full_step']:.2f}**, "
                  f"process peak {meta['frozen_over_full_process']:.2f}"
              + (f", GPU peak {meta['frozen_over_full_gpu']:.2f}" if meta.get("frozen_over_full_gpu") else "")
              + ". \"Step adds\" is the resident-set high-water mark over the steps minus the resident set "
                "before them (state and batch in place, compiled)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true", help="a tiny ResNet: checks the script, not the figures")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one configuration here
    args = p.parse_args(argv)
    arch, batch, size = ("resnet_digits", 8, 16) if args.quick else (args.arch, args.batch, args.image_size)
    if args.one:
        print("RESULT " + json.dumps(measure_one(args.one, arch, batch, size, args.steps)), flush=True)
        return 0
    rows = []
    for name in CONFIGS:
        cmd = [sys.executable, os.path.abspath(__file__), "--out", args.out, "--one", name, "--steps", str(args.steps),
               "--arch", args.arch, "--batch", str(args.batch), "--image-size", str(args.image_size)]
        out = subprocess.run(cmd + (["--quick"] if args.quick else []), capture_output=True, text=True)
        found = [line[7:] for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode or not found:
            raise SystemExit(f"{name}: the measuring process failed ({out.returncode}):\n{out.stderr[-3000:]}")
        rows.append(json.loads(found[0]))
        print(f"{name}: step adds {rows[-1]['step_peak_mib']:.0f} MiB, process peak "
              f"{rows[-1]['process_peak_mib']:.0f} MiB", flush=True)
    import jax
    from tljax.train import report

    by = {r["config"]: r for r in rows}
    ratio = lambda k: (by["frozen_backbone"][k] / by["full_ft"][k]) if by["full_ft"][k] else None  # noqa: E731
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "step": f"{arch}, batch {batch}, {size}², AdamW, 10 classes",
            "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, jax devices "
                       f"{[str(d) for d in jax.devices()]}",
            "versions": f"python {platform.python_version()}, jax {jax.__version__}", "quick": args.quick,
            "frozen_over_full_step": ratio("step_peak_mib"), "frozen_over_full_process": ratio("process_peak_mib"),
            "frozen_over_full_gpu": ratio("gpu_peak_mib")}
    report.write_benchmark(args.out, "bench_memory", {"rows": rows, **meta}, markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
