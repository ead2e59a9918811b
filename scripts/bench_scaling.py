"""How a ResNet-50 step's time grows with batch and image size, tljax against PyTorch, one plot.

    python scripts/bench_scaling.py --out runs/bench_scaling        # ≈ 10 min on 2 CPU cores
    python scripts/bench_scaling.py --out /tmp/s --quick            # tiny sizes: checks the script

Full fine-tuning steps (SGD momentum, 10 classes) from ``bench_vs_torch.resnet_case``: tljax's
default side (the XLA:CPU kernels on CPU, bfloat16 on GPU) against one PyTorch variant
(``--torch-variant``, default ``eager_cl``: channels_last, the fastest CPU variant that does not
recompile per shape; ``torch.compile`` would compile once per point). Batch sizes ``--batches`` at
``--size``, then image sizes ``--sizes`` at ``--batch``; each point interleaves the two steps for
``--reps`` rounds (bench_timing.rounds) and reports medians and the median per-round ratio.
Writes ``bench_scaling.json``/``.md`` and ``bench_scaling.png`` (matplotlib, the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import torch  # noqa: E402

import bench_timing as B  # noqa: E402
import bench_torch_side as TS  # noqa: E402
from bench_vs_torch import default_side, resnet_case, tljax_sides  # noqa: E402
from tljax.train import host_memory, report  # noqa: E402


def point(batch: int, size: int, variant: str, warmup: int, reps: int) -> dict:
    sides = tljax_sides()
    side = default_side(sides)
    jax_runs, torch_runs = resnet_case(batch, size, False, [variant], TS.torch_device().type,
                                       sides={side: sides[side]})
    m = B.rounds({"tljax": jax_runs[side][0], variant: torch_runs[variant][0]}, warmup, reps)
    out = {"batch": batch, "size": size, "tljax_ms": statistics.median(m["tljax"]["ms"]),
           "torch_ms": statistics.median(m[variant]["ms"]),
           "ratio": B.ratio_summary(m["tljax"]["ms"], m[variant]["ms"])["median"]}
    print(f"batch {batch}, {size}²: tljax {out['tljax_ms']:.0f} ms, PyTorch {variant} {out['torch_ms']:.0f} ms, "
          f"ratio {out['ratio']:.2f}", flush=True)
    return out


def plot(rows, variant: str, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install -e '.[bench]'): no plot", flush=True)
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, sweep, x, label in ((axes[0], "batch", "batch", "batch size"), (axes[1], "size", "size", "image side")):
        pts = [r for r in rows if r["sweep"] == sweep]
        ax.plot([r[x] for r in pts], [r["tljax_ms"] for r in pts], "o-", label="tljax")
        ax.plot([r[x] for r in pts], [r["torch_ms"] for r in pts], "s--", label=f"PyTorch {variant}")
        ax.set_xlabel(label), ax.set_ylabel("step ms"), ax.grid(alpha=0.3), ax.legend()
    axes[0].set_title("batch sweep")
    axes[1].set_title("image-size sweep")
    fig.suptitle("ResNet-50 full fine-tuning step")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def markdown(rows, meta) -> str:
    lines = [f"# ResNet-50 step vs batch and image size ({meta['date']})", "",
             f"Machine: {meta['machine']}. Versions: {meta['versions']}. {meta['timing']}.", "",
             f"| sweep | batch | image | tljax ms | PyTorch {meta['variant']} ms | tljax ÷ PyTorch | tljax ms per image |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['sweep']} | {r['batch']} | {r['size']}² | {r['tljax_ms']:,.0f} | {r['torch_ms']:,.0f} | "
                     f"**{r['ratio']:.2f}** | {r['tljax_ms'] / r['batch']:.1f} |")
    if meta["plot"]:
        lines += ["", f"![scaling]({meta['plot']})"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true", help="tiny sizes and 1 round: checks the script, not the speed")
    p.add_argument("--batches", default="8,16,32,64")
    p.add_argument("--sizes", default="112,160,224")
    p.add_argument("--batch", type=int, default=16, help="batch of the image-size sweep")
    p.add_argument("--size", type=int, default=224, help="image side of the batch sweep")
    p.add_argument("--torch-variant", default=None, help="default: eager_cl on CPU, bf16_cl on GPU")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args(argv)
    host_memory.configure("keep", restart=argv is None)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    variant = args.torch_variant or ("eager_cl" if TS.torch_device().type == "cpu" else "bf16_cl")
    batches = [2, 4] if args.quick else [int(b) for b in args.batches.split(",")]
    sizes = [32, 48] if args.quick else [int(s) for s in args.sizes.split(",")]
    batch, size = (2, 32) if args.quick else (args.batch, args.size)
    reps = args.reps or (1 if args.quick else 3)
    rows = [{"sweep": "batch", **point(b, size, variant, args.warmup, reps)} for b in batches]
    rows += [{"sweep": "size", **point(batch, s, variant, args.warmup, reps)} for s in sizes]
    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "bench_scaling.png")
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "variant": variant, "quick": args.quick,
            "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, jax devices "
                       f"{[str(d) for d in jax.devices()]}",
            "versions": f"python {platform.python_version()}, jax {jax.__version__}, torch {torch.__version__}",
            "timing": f"per point: each step compiled and run once, {args.warmup} warm-up and {reps} timed rounds, "
                      f"interleaved; medians", "plot": "bench_scaling.png" if plot(rows, variant, png) else None}
    report.write_benchmark(args.out, "bench_scaling", {"rows": rows, **meta}, markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
