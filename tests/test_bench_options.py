"""bench_options' option table and report, without timing anything."""

import importlib.util
import os

from conftest import ROOT

spec = importlib.util.spec_from_file_location("bench_options", os.path.join(ROOT, "scripts", "bench_options.py"))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_every_option_is_a_valid_config_or_compile_keyword():
    from tljax.config import validate

    for name, (config_fields, compile_kwargs) in bench.OPTIONS.items():
        config = bench.base_config("resnet_digits", {"widths": (8, 16, 32)})
        assert set(config_fields) <= set(config), name
        config.update(config_fields)
        validate(config)  # accum_in_loop, cpu_kernels: values among the base config's CHOICES
        assert set(compile_kwargs) <= {"donate"}, name
    assert bench.OPTIONS["cpu_kernels=off"][0] == {"cpu_kernels": "off"}  # what the kernels buy, next to the baseline


def test_markdown_lists_every_option():
    row = {"option": "remat=True", "step_ms": 1234.5, "ratio": 1.2, "compile_s": 3.0, "gflop": 21.4,
           "temp_mib": 170.0, "argument_mib": 90.0, "donated_reused_mib": 88.0, "total_mib": 262.0}
    meta = {"date": "d", "machine": "m", "versions": "v", "step": "s", "timing": "t"}
    assert "| remat=True | 1,234 | **1.20** | 3.0 | 21.4 | 170 | 90 | 88 | 262 |" in bench.markdown([row], meta)
