"""The jit step over a data mesh: 4 devices compute what 1 device computes."""

import os
import subprocess
import sys
import textwrap

import numpy as np

from conftest import ROOT

SCRIPT = textwrap.dedent("""
    import sys, jax, numpy as np
    from tljax import data, params as P
    from tljax.config import load_file
    from tljax.train import loop, step as S
    config = load_file("configs/digits_transfer.py:runlocal")
    config.num_steps = 3
    train, test, info = data.load_splits(config.data, config.seed)
    out = loop.fit(config, train, test, info["num_classes"], sys.argv[1], "full_ft")
    assert out["summary"]["num_devices"] == jax.device_count()
    try:
        S.check_global_batch(30, S.make_mesh())
        message = "no error"
    except ValueError as e:
        message = str(e)
    flat = {k: np.asarray(v) for k, v in P.flatten(jax.device_get(out["variables"])).items()}
    np.savez(sys.argv[1] + "/params.npz", message=message, devices=jax.device_count(), **flat)
""")


def run_on(devices, workdir):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", SCRIPT, str(workdir)], cwd=ROOT, env=env, check=True, capture_output=True)
    return dict(np.load(workdir / "params.npz"))


def test_four_devices_match_one(tmp_path):
    one = run_on(1, tmp_path / "one")
    four = run_on(4, tmp_path / "four")
    assert int(one.pop("devices")) == 1 and int(four.pop("devices")) == 4
    assert str(one.pop("message")) == "no error"
    assert "batch_size 30 does not divide the 4 devices" in str(four.pop("message"))
    assert one.keys() == four.keys()
    diff = max(float(np.max(np.abs(one[k] - four[k]))) for k in one)
    print(f"max |params(1 device) - params(4 devices)| after 3 steps: {diff:.3g}")
    assert diff <= 1e-5
    assert any(not np.array_equal(one[k], 0) for k in one)
