"""bench_vs_torch's peak-FLOP arithmetic and report, without running the benchmark."""

import importlib.util
import os

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("bench_vs_torch", os.path.join(ROOT, "scripts", "bench_vs_torch.py"))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_peak_is_cores_ghz_fma_lanes_two():
    peak, how = bench.cpu_peak("model name\t: AMD EPYC\ncpu MHz\t\t: 2300.000\n", {"avx512f", "avx2", "fma"}, 2)
    assert peak == 2 * 2.3e9 * 2 * 16 * 2  # 294 GFLOP/s, the figure in PERFORMANCE_NOTES
    assert "2 cores × 2.30 GHz × 2 FMA units × 16 fp32 lanes" in how and "cpu MHz" in how
    named, _ = bench.cpu_peak("model name : Xeon @ 3.00GHz\ncpu MHz : 1200.0\n", {"avx2", "fma"}, 4)
    assert named == 4 * 3e9 * 2 * 8 * 2  # the nominal clock wins over the current one
    assert bench.cpu_peak("cpu MHz : 1000\n", set(), 1, ghz=2.0)[0] == 2e9 * 4 * 2


def test_markdown_lists_every_row():
    timed = {"name": "resnet50_full_ft", "tljax_ms": 900.0, "torch_ms": 1000.0, "ratio": 0.91, "ratio_min": 0.8,
             "ratio_max": 1.0, "ratio_ci95": [0.85, 0.95], "tljax_compile_s": 12.0, "xla_gflop": 382.9, "tljax_mfu": 0.4, "torch_mfu": 0.36,
             "tljax_peak_rss_mib": 2000, "torch_peak_rss_mib": 1900, "tljax_step_rss_mib": 300, "torch_step_rss_mib": 200}
    rows = [timed, {"name": "recompiles", "tljax_ms": None, "torch_ms": None, "ratio": None, "value": 0}]
    meta = {"date": "d", "machine": "m", "peak_how": "p", "versions": "v", "timing": "t", "malloc": "host_malloc=keep: k"}
    text = bench.markdown(rows, meta)
    assert "| resnet50_full_ft | 900 | 1,000 | **0.91** [0.80–1.00], 95% CI 0.85–0.95 | 12.0 | 382.9 | 40% / 36% |" in text
    assert "- recompiles: **0**" in text
    assert "Memory: host_malloc=keep: k." in text


def test_median_interval_is_the_binomial_order_statistics():
    values = [20 - i for i in range(20)]  # 20 pairs, in any order
    assert bench.median_interval(values) == [6, 15]  # P(B(20, ½) ≤ 5) = 0.021 ≤ 0.025 < P(B ≤ 6) = 0.058
    assert bench.median_interval(range(6)) == [0, 5]  # with 6 pairs only the extremes reach 95 %
    assert bench.median_interval(range(5)) is None  # with 5, not even those: 2 / 32 > 0.05


def test_gpu_rows_show_device_memory_and_unknown_flops():
    row = {"name": "minilm", "tljax_ms": 7.04, "torch_ms": 16.9, "ratio": 0.42, "ratio_min": 0.35, "ratio_max": 0.48,
           "tljax_compile_s": 16.9, "xla_gflop": 0.0, "tljax_mfu": None, "torch_mfu": None, "tljax_peak_rss_mib": 6000,
           "torch_peak_rss_mib": 6000, "tljax_gpu_peak_mib": 4838, "torch_gpu_peak_mib": 657}
    meta = {"date": "d", "machine": "m", "peak_how": "p", "versions": "v", "timing": "t", "malloc": "k"}
    text = bench.markdown([row], meta)
    assert "| minilm | 7.0 | 16.9 | **0.42** [0.35–0.48] | 16.9 | n/a | n/a | 6,000 / 6,000 | 4,838 / 657 |" in text
    assert bench.gpu_peak("NVIDIA H200")[0] == 494.7e12
    assert bench.gpu_peak("Some GPU", tflops=100.0)[0] == 100e12
    with pytest.raises(SystemExit, match="--peak-tflops"):
        bench.gpu_peak("Some GPU")
