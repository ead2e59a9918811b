"""bench_vs_torch: its peak-FLOP arithmetic, statistics, PyTorch variants and report without running
the benchmark, and one ``--quick`` run (one row, two PyTorch variants) checking the JSON's columns."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPTS = os.path.join(ROOT, "scripts")


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(SCRIPTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load("bench_vs_torch")  # puts scripts/ on sys.path for its helpers
B, TS, R = load("bench_timing"), load("bench_torch_side"), load("bench_vs_torch_report")


def test_every_script_fits_300_lines():
    for name in ("bench_vs_torch", "bench_timing", "bench_torch_side", "bench_vs_torch_report", "bench_options",
                 "bench_input", "bench_memory", "bench_scaling"):
        assert len(open(os.path.join(SCRIPTS, f"{name}.py")).read().splitlines()) <= 300, name


def test_peak_is_cores_ghz_fma_lanes_two():
    peak, how = B.cpu_peak("model name\t: AMD EPYC\ncpu MHz\t\t: 2300.000\n", {"avx512f", "avx2", "fma"}, 2)
    assert peak == 2 * 2.3e9 * 2 * 16 * 2  # 294 GFLOP/s, the figure in PERFORMANCE_NOTES
    assert "2 cores × 2.30 GHz × 2 FMA units × 16 fp32 lanes" in how and "cpu MHz" in how
    named, _ = B.cpu_peak("model name : Xeon @ 3.00GHz\ncpu MHz : 1200.0\n", {"avx2", "fma"}, 4)
    assert named == 4 * 3e9 * 2 * 8 * 2  # the nominal clock wins over the current one
    assert B.cpu_peak("cpu MHz : 1000\n", set(), 1, ghz=2.0)[0] == 2e9 * 4 * 2
    assert B.gpu_peak("NVIDIA H200")[0] == 494.7e12
    assert B.gpu_peak("Some GPU", tflops=100.0)[0] == 100e12
    with pytest.raises(SystemExit, match="--peak-tflops"):
        B.gpu_peak("Some GPU")


def test_median_interval_is_the_binomial_order_statistics():
    values = [20 - i for i in range(20)]  # 20 pairs, in any order
    assert B.median_interval(values) == [6, 15]  # P(B(20, ½) ≤ 5) = 0.021 ≤ 0.025 < P(B ≤ 6) = 0.058
    assert B.median_interval(range(6)) == [0, 5]  # with 6 pairs only the extremes reach 95 %
    assert B.median_interval(range(5)) is None  # with 5, not even those: 2 / 32 > 0.05


def test_rounds_rotate_the_first_step_and_ratios_pair_rounds():
    calls = []
    runs = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    m = B.rounds(runs, warmup=1, reps=3)
    assert [calls[i] for i in range(0, 12, 3)] == ["a", "b", "c", "a"]  # each round starts one later
    assert sorted(calls) == sorted("abc" * 4) and all(len(m[k]["ms"]) == 3 for k in "abc")
    s = B.ratio_summary([2.0, 4.0, 9.0], [1.0, 1.0, 3.0])
    assert (s["median"], s["min"], s["max"], s["ci95"]) == (3.0, 2.0, 4.0, None)


def test_fastest_is_the_variant_tljax_compares_worst_with():
    ratios = {"eager": {"median": 0.9}, "eager_cl": {"median": 1.1}, "compile": {"median": 1.0}}
    assert B.fastest(ratios) == "eager_cl"
    assert B.fastest({}) is None


def test_torch_variants_per_device_and_for_text_rows():
    assert TS.parse_variants("", "cpu") == ["eager", "eager_cl", "compile", "compile_cl"]
    assert TS.parse_variants(None, "cuda") == ["eager", "bf16_cl", "bf16_cl_compile"]
    assert TS.parse_variants("compile, eager,compile", "cpu") == ["compile", "eager"]
    with pytest.raises(SystemExit, match="bf16_cl"):
        TS.parse_variants("bf16_cl", "cpu")
    assert TS.for_text(["eager", "eager_cl", "compile", "compile_cl"]) == ["eager", "compile"]
    assert TS.for_text(["eager_cl"]) == ["eager"]  # channels_last means nothing without images
    assert TS.for_text(["eager", "bf16_cl", "bf16_cl_compile"]) == ["eager", "bf16_cl", "bf16_cl_compile"]


def summary(median, ci=None):
    return {"median": median, "min": median - 0.1, "max": median + 0.1, "ci95": ci}


def timed_row(gpu=False):
    sides = ("plain",) if gpu else ("kernels", "plain")
    row = {"name": "resnet50_full_ft", "tljax_ms": 900.0, "tljax_ms_kernels": None if gpu else 900.0,
           "tljax_ms_plain": 1100.0, "torch_variants_ms": {"eager": 1000.0, "eager_cl": 800.0},
           "torch_first_step_s": {"eager": 1.5, "eager_cl": 2.0}, "torch_best": "eager_cl",
           "ratios": {s: {"eager": summary(0.9 if s == "kernels" else 1.1, [0.85, 0.95]),
                          "eager_cl": summary(1.12 if s == "kernels" else 1.37)} for s in sides},
           "tljax_compile_s": {s: 12.0 for s in sides}, "xla_gflop": 382.9 * (not gpu),
           "mfu": {"kernels": 0.4, "plain": 0.33, "eager": 0.36, "eager_cl": 0.45},
           "peak_rss_mib": {"kernels": 2000, "plain": 2100, "eager": 1900, "eager_cl": 1950}}
    if gpu:
        row.update(tljax_gpu_peak_mib=4838, torch_gpu_peak_mib=657)
    return row


META = {"date": "d", "machine": "m", "peak_how": "p", "versions": "v", "timing": "t", "malloc": "host_malloc=keep: k"}


def test_markdown_lists_both_tljax_sides_every_variant_and_value_rows():
    rows = [timed_row(), {"name": "recompiles", "tljax_ms": None, "torch_ms": None, "ratio": None, "value": 0}]
    text = R.markdown(rows, META)
    assert ("| resnet50_full_ft | 900 / 1,100 | 1,000 | eager_cl 800 | **0.90** (0.85–0.95) | **1.10** (0.85–0.95) "
            "| **1.12** [1.02–1.22] | **1.37** [1.27–1.47] |") in text
    assert "| step | PyTorch eager | PyTorch eager_cl |" in text and "| resnet50_full_ft | 1,000 (1.5 s) | 800 (2.0 s) |" in text
    assert "| resnet50_full_ft | 12.0 / 12.0 | 382.9 | 40% / 33% / 45% | 2,100 / 1,950 |" in text
    assert "- recompiles: **0**" in text
    assert "Memory: host_malloc=keep: k." in text


def test_gpu_rows_show_no_kernels_side_device_memory_and_unknown_flops():
    text = R.markdown([timed_row(gpu=True)], META)
    assert "| resnet50_full_ft | – / 1,100 | 1,000 | eager_cl 800 | – | **1.10** (0.85–0.95) | – |" in text
    assert "| resnet50_full_ft | – / 12.0 | n/a | n/a | 2,100 / 1,950 | 4,838 / 657 |" in text


def test_gpu_rows_with_bfloat16_show_it_as_a_third_side():
    row = timed_row(gpu=True)
    row["tljax_ms_bf16"], row["tljax_compile_s"]["bf16"], row["mfu"]["bf16"] = 450.0, 14.0, 0.5
    row["ratios"]["bf16"] = {"eager": summary(0.45, [0.4, 0.5]), "eager_cl": summary(0.56)}
    text = R.markdown([row], META)
    assert "| step | tljax ms, kernels / plain / bf16 | PyTorch eager ms |" in text
    assert ("| resnet50_full_ft | – / 1,100 / 450 | 1,000 | eager_cl 800 | – | **1.10** (0.85–0.95) | "
            "**0.45** (0.40–0.50) | – | **1.37** [1.27–1.47] | **0.56** [0.46–0.66] |") in text
    assert "| resnet50_full_ft | – / 12.0 / 14.0 | n/a |" in text


def test_bf16_side_is_the_default_on_gpu_and_an_option_on_cpu():
    assert bench.default_side({"plain": {}, "bf16": {}}) == "bf16"
    assert bench.default_side({"kernels": {}, "plain": {}, "bf16": {}}) == "kernels"
    bench.BF16[0] = True
    try:
        sides = bench.tljax_sides()  # this machine runs JAX on CPU
    finally:
        bench.BF16[0] = False
    assert set(sides) == {"kernels", "plain", "bf16"} and sides["bf16"]["dtype"] == bench.jnp.bfloat16
    assert set(bench.tljax_sides()) == {"kernels", "plain"}


@pytest.mark.slow
def test_quick_run_reports_kernels_on_and_off_against_every_variant(tmp_path):
    cmd = [sys.executable, os.path.join(SCRIPTS, "bench_vs_torch.py"), "--out", str(tmp_path), "--quick",
           "--rows", "frozen", "--torch-variants", "eager,eager_cl", "--image-size", "32", "--warmup", "0",
           "--bf16"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.load(open(tmp_path / "bench_vs_torch.json"))["rows"]
    row = next(r for r in rows if r["name"].startswith("resnet50_frozen_backbone"))
    assert row["tljax_ms_kernels"] > 0 and row["tljax_ms_plain"] > 0 and row["tljax_ms_bf16"] > 0
    assert set(row["torch_variants_ms"]) == {"eager", "eager_cl"} and row["torch_ms"] == row["torch_variants_ms"]["eager"]
    for side in ("kernels", "plain", "bf16"):
        assert set(row["ratios"][side]) == {"eager", "eager_cl"}
        assert row[f"ratio_eager_{side}"] == row["ratios"][side]["eager"]["median"]
    assert row["ratio_best"] >= row["ratio_eager"] == row["ratio"] == row["ratio_eager_kernels"]
    assert row["torch_best"] in ("eager", "eager_cl") and len(row["rounds_ms"]["kernels"]) == 2
    text = open(tmp_path / "bench_vs_torch.md").read()
    assert "| step | tljax ms, kernels / plain / bf16 | PyTorch eager ms | fastest PyTorch, ms |" in text
