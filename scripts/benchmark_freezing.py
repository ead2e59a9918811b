"""Compares freezing strategies on one task: strategies × seeds (× label budgets).

    python scripts/benchmark_freezing.py --config configs/bench_digits.py --out runs/bench_digits

Each cell is one ``python -m tljax.run`` run in its own process (so peak memory is the
cell's own) in ``OUT/cells/<cell>``; cells whose ``summary.json`` exists are skipped, so an
interrupted benchmark resumes. A strategy written ``name+cache`` runs with
``config.feature_cache=True``; ``name|lr=1e-3`` adds config overrides to that cell; ``name@configs/x.py``
runs that cell from another config file (``configs/bench_methods.py``: one benchmark of several
methods, with ``bench.baselines`` listing each method's gain over its plain baseline). Writes ``results.csv``, ``results.json``, ``results.md``
(mean ± std over seeds) and two plots: accuracy vs trainable parameters and vs train time.
"compile s" counts a load from ``config.compilation_cache`` where an earlier cell (or run) compiled
the same step; ``--override compilation_cache=`` (empty) makes every cell compile afresh.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tljax.config import apply_overrides, load_file  # noqa: E402

COLUMNS = ("accuracy", "f1_macro", "train_seconds", "step_ms_median", "compile_seconds", "peak_rss_mb",
           "device_peak_bytes", "trainable_params", "opt_state_floats", "flops_per_step", "feature_seconds",
           "ridge_accuracy", "epochs")


def cells(bench):
    """``[(cell name, strategy, seed, budget)]`` in run order."""
    budgets = list(bench.budgets) or [None]
    return [(cell_name(s, seed, b), s, seed, b) for b in budgets for s in bench.strategies for seed in bench.seeds]


def cell_name(strategy: str, seed: int, budget) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in strategy)
    return f"{safe}__seed{seed}" + (f"__budget{budget}" if budget is not None else "")


def run_cell(args, bench, workdir, strategy, seed, budget) -> dict:
    spec, *cell_overrides = strategy.split("|")
    spec, _, cell_config = spec.partition("@")  # name@configs/x.py: this cell's own config file
    name, _, extra = spec.partition("+")
    overrides = [f"--config.strategy={name}", f"--config.seed={seed}", "--config.compare=()",
                 *[f"--config.{o}" for o in [*args.override, *cell_overrides]]]
    if extra == "cache":
        overrides.append("--config.feature_cache=true")
    if budget is not None:
        overrides.append(f"--config.{bench.budget_field}={budget}")
    os.makedirs(workdir, exist_ok=True)
    shared_source = os.path.join(args.out, f"source_seed{seed}")
    if args.has_source and not os.path.exists(os.path.join(workdir, "source")):  # one pre-training per seed
        os.makedirs(shared_source, exist_ok=True)
        os.symlink(os.path.abspath(shared_source), os.path.join(workdir, "source"))
    cmd = [sys.executable, "-m", "tljax.train", "--config", cell_config or args.config, "--workdir", workdir,
           *overrides]
    with open(os.path.join(workdir, "log.txt"), "w") as log:
        result = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SystemExit(f"cell {workdir} failed (exit {result.returncode}); see {workdir}/log.txt")
    with open(os.path.join(workdir, "summary.json")) as f:
        return json.load(f)


def aggregate(rows):
    """Mean ± std over seeds per (strategy, budget)."""
    groups = {}
    for row in rows:
        groups.setdefault((row["strategy"], row["budget"]), []).append(row)
    out = []
    for (strategy, budget), members in groups.items():
        agg = {"strategy": strategy, "budget": budget, "seeds": len(members)}
        for col in COLUMNS:
            values = [m[col] for m in members if m.get(col) is not None]
            if values:
                agg[col] = float(np.mean(values))
                agg[col + "_std"] = float(np.std(values))
        out.append(agg)
    return out


def esc(name: str) -> str:
    """A cell spec as Markdown table text (its ``|`` overrides escaped)."""
    return name.replace("|", "\\|")


def markdown(agg, machine) -> str:
    fmt = lambda a, k, f: (f"{a[k]:{f}} ± {a[k + '_std']:{f}}" if k in a else "–")  # noqa: E731
    lines = [f"Machine: {machine}", "",
             "| strategy | budget | seeds | accuracy | f1_macro | trainable params | opt-state floats | "
             "train s | step ms | compile s | GFLOP/step | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in agg:
        lines.append(f"| {esc(a['strategy'])} | {a['budget'] if a['budget'] is not None else '–'} | {a['seeds']} | "
                     f"{fmt(a, 'accuracy', '.3f')} | {fmt(a, 'f1_macro', '.3f')} | {a['trainable_params']:,.0f} | "
                     f"{a['opt_state_floats']:,.0f} | {fmt(a, 'train_seconds', '.1f')} | "
                     f"{fmt(a, 'step_ms_median', '.1f')} | {fmt(a, 'compile_seconds', '.1f')} | "
                     f"{a.get('flops_per_step', 0) / 1e9:.3f} | {a.get('peak_rss_mb', 0):,.0f} |")
    return "\n".join(lines) + "\n"


def cache_speedup(agg) -> str:
    """Per-epoch time of the linear probe without and with the feature cache, per budget."""
    lines = []
    for a in agg:
        if a["strategy"] == "linear_probe+cache":
            plain = next((b for b in agg if b["strategy"] == "linear_probe" and b["budget"] == a["budget"]), None)
            if plain:
                per_epoch = lambda r: r["train_seconds"] / r["epochs"]  # noqa: E731
                lines.append(f"\nFeature cache: {per_epoch(plain) * 1e3:.1f} ms vs {per_epoch(a) * 1e3:.2f} ms per "
                             f"epoch of linear probing, {per_epoch(plain) / per_epoch(a):.0f}x faster "
                             f"(plus {a.get('feature_seconds', 0):.1f} s once to compute the features).\n")
    return "".join(lines)


def gains(agg, baselines) -> str:
    """``bench.baselines = ((label, method cell, baseline cell), …)``: accuracy gain of each method."""
    if not baselines:
        return ""
    by_name = {(a["strategy"], a["budget"]): a for a in agg}
    lines = ["\n| method | baseline | accuracy | baseline accuracy | gain |", "|---|---|---|---|---|"]
    for label, method, base in baselines:
        for (name, budget), a in by_name.items():
            b = by_name.get((base, budget))
            if name == method and b:
                lines.append(f"| {label} | {esc(base)} | "
                             f"{a['accuracy']:.3f} ± {a['accuracy_std']:.3f} | "
                             f"{b['accuracy']:.3f} ± {b['accuracy_std']:.3f} | {a['accuracy'] - b['accuracy']:+.3f} |")
    return "\n".join(lines) + "\n"


def plot(agg, out) -> int:
    """Writes the two plots; without matplotlib (the ``bench`` extra) says so and writes none."""
    try:
        import matplotlib  # noqa: PLC0415
    except ImportError:
        print("no plots: matplotlib is not installed (pip install -e '.[bench]'); the tables are written",
              file=sys.stderr)
        return 0
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    for x_key, label, name in [("trainable_params", "trainable parameters", "accuracy_vs_params.png"),
                               ("train_seconds", "train time (s)", "accuracy_vs_time.png")]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for a in agg:
            ax.errorbar(max(a[x_key], 1), a["accuracy"], yerr=a.get("accuracy_std", 0), fmt="o", capsize=3)
            ax.annotate(a["strategy"] + (f" ({a['budget']})" if a["budget"] is not None else ""),
                        (max(a[x_key], 1), a["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=120)
        plt.close(fig)
    return 2


def machine() -> str:
    import jax  # noqa: PLC0415
    import optax  # noqa: PLC0415

    return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, devices {jax.devices()}; "
            f"python {platform.python_version()}, jax {jax.__version__}, optax {optax.__version__}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every cell, e.g. --override num_steps=50")
    args = parser.parse_args()
    config = apply_overrides(load_file(args.config), args.override)
    bench, args.has_source = config.bench, bool(config.get("source"))
    todo = cells(bench)
    rows, start = [], time.perf_counter()
    for name, strategy, seed, budget in tqdm(todo, desc="cells"):
        workdir = os.path.join(args.out, "cells", name)
        summary_path = os.path.join(workdir, "summary.json")
        if os.path.exists(summary_path):
            with open(summary_path) as f:
                summary = json.load(f)
        else:
            summary = run_cell(args, bench, workdir, strategy, seed, budget)
        rows.append({"cell": name, "strategy": strategy, "seed": seed, "budget": budget,
                     "epochs": summary["num_steps"] * summary["batch_size"] / max(summary["train_examples"], 1),
                     **{k: summary.get(k) for k in COLUMNS if k != "epochs"}})
    agg = aggregate(rows)
    info = machine()
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"machine": info, "wall_seconds": time.perf_counter() - start, "cells": rows, "mean_std": agg}, f,
                  indent=1)
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["cell", "strategy", "seed", "budget", *COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    table = markdown(agg, info) + cache_speedup(agg) + gains(agg, bench.get("baselines", ()))
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    plots = plot(agg, args.out)
    print(table)
    print(f"wrote {args.out}/results.{{csv,json,md}} and {plots} plots in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
