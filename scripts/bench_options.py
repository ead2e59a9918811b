"""Speed and memory options of the train step, measured side by side in one run.

    python scripts/bench_options.py --out runs/bench_options            # ≈ 3 min on 2 CPU cores
    python scripts/bench_options.py --out /tmp/o --quick                # seconds-long smoke run

One model and batch (default: ResNet-18, batch 32, 112², AdamW full fine-tuning), built from
the base config (``tljax.defaults``) as the training loop builds it and compiled by the library's
``compile_train_step`` under each option: the baseline (float32, state donated,
``cpu_kernels='auto'``: the XLA:CPU kernels on CPU), ``cpu_kernels=off`` (plain Flax ops),
``dtype=bfloat16``, ``grad_accum=4`` (unrolled, the CPU default, and in a ``lax.scan``),
``remat`` (per-block recomputation) and no buffer donation. Per option: median step time and its
ratio to the baseline (options interleaved rep by rep, median of per-rep ratios), compile
seconds, XLA FLOPs, and XLA's own memory plan of the compiled step (temporary buffers; argument
bytes reused for outputs by donation). The process's malloc is ``--malloc`` (default ``keep``,
as ``python -m tljax.run``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import jax
import ml_collections
import numpy as np

from tljax import defaults, strategies
from tljax.train import host_memory, report
from tljax.train import state as T
from tljax.train import devices as D
from tljax.train import step as S

MIB = 2 ** 20
OPTIONS = {  # name -> (config fields, compile_train_step keywords)
    "baseline (float32, donated)": ({}, {}),  # cpu_kernels='auto': on when the step runs on CPU
    "cpu_kernels=off": ({"cpu_kernels": "off"}, {}),
    "dtype=bfloat16": ({"dtype": "bfloat16"}, {}),
    "grad_accum=4": ({"grad_accum": 4}, {}),  # on CPU: micro-batches unrolled (the default there)
    "grad_accum=4, in a loop": ({"grad_accum": 4, "accum_in_loop": "on"}, {}),
    "remat=True": ({"remat": True}, {}),
    "no donation": ({}, {"donate": False}),
}


def base_config(arch: str, overrides) -> ml_collections.ConfigDict:
    """The base config with ``arch``, its ``model`` overrides, AdamW at a constant learning rate."""
    config = defaults.base_config()
    config.update(dict(arch=arch, model=dict(overrides), optimizer="adamw", lr=1e-4, wd=1e-4,
                       lr_schedule="constant", warmup_steps=0, num_steps=10_000, seed=0))
    return config


def compiled_step(config, batch, donate: bool = True, strategy: str = "full_ft"):
    """``(run_one_step, compile_seconds, flops, memory)`` for the loop's own step under ``config``,
    training what ``strategy`` trains (frozen BatchNorms in inference mode, LoRA merged, as the loop)."""
    mesh = D.make_mesh()
    model = T.build_model(config, 10, D.cpu_kernels_on(config.cpu_kernels, mesh))
    state, tx, mask, param_fn = T.prepare(config, strategies.get(strategy), T.init_variables(model, batch, 0), 1)
    state = jax.device_put(state, D.replicated(mesh))
    dev_batch = D.shard_batch(batch, mesh)
    fn = S.make_train_step(model, tx, mask, S.frozen_batchnorms(state.batch_stats, mask), 0, param_fn=param_fn,
                           grad_accum=config.grad_accum,
                           accum_in_loop={"auto": None, "on": True, "off": False}[config.accum_in_loop])
    compiled, seconds, flops = D.compile_train_step(fn, state, dev_batch, mesh, donate=donate)
    memory = compiled.memory_analysis()
    holder = [state]

    def run():
        start = time.perf_counter()
        holder[0], metrics = compiled(holder[0], dev_batch)
        jax.block_until_ready((holder[0], metrics))
        return (time.perf_counter() - start) * 1e3

    return run, seconds, flops, memory


def measure(arch, overrides, batch, warmup: int, reps: int):
    runs = {}
    for name, (fields, kwargs) in OPTIONS.items():
        config = base_config(arch, overrides)
        config.update(fields)
        runs[name] = compiled_step(config, batch, **kwargs)
        print(f"compiled {name}: {runs[name][1]:.1f} s", flush=True)
    for _ in range(warmup):
        for run, *_ in runs.values():
            run()
    times = {name: [] for name in runs}
    for _ in range(reps):  # interleaved: every option once per rep
        for name, (run, *_) in runs.items():
            times[name].append(run())
    base = next(iter(runs))
    rows = []
    for name, (_, seconds, flops, memory) in runs.items():
        ratios = [t / b for t, b in zip(times[name], times[base])]
        rows.append({"option": name, "step_ms": statistics.median(times[name]), "ratio": statistics.median(ratios),
                     "compile_s": seconds, "gflop": flops / 1e9,
                     "temp_mib": memory.temp_size_in_bytes / MIB if memory else None,
                     "argument_mib": memory.argument_size_in_bytes / MIB if memory else None,
                     "donated_reused_mib": memory.alias_size_in_bytes / MIB if memory else None,
                     "total_mib": (memory.argument_size_in_bytes + memory.output_size_in_bytes
                                   + memory.temp_size_in_bytes - memory.alias_size_in_bytes) / MIB if memory else None})
    return rows


def markdown(rows, meta) -> str:
    lines = [f"# Train-step options, one run ({meta['date']})", "",
             f"Machine: {meta['machine']}. Versions: {meta['versions']}. Step: {meta['step']}. "
             f"Timing: {meta['timing']}.",
             "", "| option | step ms | ratio to baseline | compile s | XLA GFLOP | XLA temp MiB | arguments MiB | "
                 "donated, reused MiB | total MiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['option']} | {r['step_ms']:,.0f} | **{r['ratio']:.2f}** | {r['compile_s']:.1f} | "
                     f"{r['gflop']:.1f} | {r['temp_mib']:,.0f} | {r['argument_mib']:,.0f} | "
                     f"{r['donated_reused_mib']:,.0f} | {r['total_mib']:,.0f} |")
    lines += ["", "XLA temp MiB is the compiled step's planned scratch memory (activations kept for the backward "
                  "pass among it); donated MiB is state memory the step's outputs reuse instead of allocating; "
                  "total = arguments + outputs + temp − donated."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true", help="a tiny ResNet and 2 reps: checks the script, not the speed")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--malloc", choices=host_memory.MODES, default="keep",
                   help="the process's malloc (tljax.train.host_memory; jemalloc restarts the command under it)")
    args = p.parse_args(argv)
    malloc = host_memory.configure(args.malloc, restart=argv is None)  # as python -m tljax.run does
    overrides = {"widths": (8, 16, 32)} if args.quick else {}
    arch = "resnet_digits" if args.quick else args.arch
    batch_size, size = (8, 16) if args.quick else (args.batch, args.image_size)
    reps = args.reps or (2 if args.quick else 5)
    rng = np.random.default_rng(0)
    batch = {"image": rng.standard_normal((batch_size, size, size, 3)).astype(np.float32),
             "label": (np.arange(batch_size) % 10).astype(np.int32)}
    load_before = os.getloadavg()[0]
    rows = measure(arch, overrides, batch, args.warmup, reps)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
                       f"jax devices {[str(d) for d in jax.devices()]}",
            "versions": f"python {platform.python_version()}, jax {jax.__version__}",
            "step": f"{arch} full FT, AdamW, batch {batch_size}, {size}²",
            "timing": f"{args.warmup} warm-up rep(s), then {reps} interleaved reps, medians; 1-min load average "
                      f"{load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end; malloc: "
                      f"{malloc} (tljax.train.host_memory)", "quick": args.quick}
    report.write_benchmark(args.out, "bench_options", {"rows": rows, **meta}, markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
