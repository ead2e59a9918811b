"""bench_memory and bench_scaling: one ``--quick`` run each, checking what they measure and write."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPTS = os.path.join(ROOT, "scripts")


def run_script(name, out, *args):
    proc = subprocess.run([sys.executable, os.path.join(SCRIPTS, f"{name}.py"), "--out", str(out), "--quick", *args],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.load(open(out / f"{name}.json")), (out / f"{name}.md").read_text()


def test_bench_memory_measures_each_configuration_in_its_own_process(tmp_path):
    result, md = run_script("bench_memory", tmp_path)
    rows = {r["config"]: r for r in result["rows"]}
    assert set(rows) == {"full_ft", "frozen_backbone", "lora:8", "full_ft, remat", "full_ft, grad_accum=4"}
    for r in rows.values():
        assert r["process_peak_mib"] >= r["rss_before_mib"] > 50  # a live JAX process, high-water after reset
        assert r["step_peak_mib"] == pytest.approx(r["process_peak_mib"] - r["rss_before_mib"])
    # A frozen backbone keeps no activations for a backward pass through it: XLA plans less scratch.
    assert rows["frozen_backbone"]["xla_temp_mib"] < rows["full_ft"]["xla_temp_mib"]
    assert result["frozen_over_full_process"] == pytest.approx(
        rows["frozen_backbone"]["process_peak_mib"] / rows["full_ft"]["process_peak_mib"])
    assert "| frozen_backbone |" in md and "Frozen backbone ÷ full fine-tuning" in md


def test_bench_scaling_sweeps_batch_and_image_size_and_plots(tmp_path):
    pytest.importorskip("torch")
    result, md = run_script("bench_scaling", tmp_path, "--torch-variant", "eager")
    sweeps = [(r["sweep"], r["batch"], r["size"]) for r in result["rows"]]
    assert sweeps == [("batch", 2, 32), ("batch", 4, 32), ("size", 2, 32), ("size", 2, 48)]
    for r in result["rows"]:
        assert r["tljax_ms"] > 0 and r["torch_ms"] > 0 and 0.01 < r["ratio"] < 100
    if result["plot"]:
        assert (tmp_path / "bench_scaling.png").stat().st_size > 1000
    assert "| batch | 4 | 32² |" in md
