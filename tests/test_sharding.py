"""The jit step over a data mesh: 4 devices compute what 1 device computes."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import ROOT

SCRIPT = textwrap.dedent("""
    import sys, jax, numpy as np
    from tljax import data, params as P
    from tljax.config import load_file
    from tljax.train import devices as D, loop
    config = load_file("configs/digits_transfer.py:runlocal")
    config.num_steps = 3
    train, test, info = data.load_splits(config.data, config.seed)
    out = loop.fit(config, train, test, info["num_classes"], sys.argv[1], "full_ft")
    assert out["summary"]["num_devices"] == jax.device_count()
    try:
        D.check_global_batch(30, D.make_mesh())
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


FSDP_SCRIPT = textwrap.dedent("""
    import sys, ast, jax, numpy as np
    from tljax import data, params as P
    from tljax.config import load_file
    from tljax.train import loop
    config = load_file("configs/digits_transfer.py")  # the full-width model: kernels big enough to split
    config.num_steps, config.ckpt_every, config.batch_size = 3, 0, 32
    config.mesh = ast.literal_eval(sys.argv[2])
    train, test, info = data.load_splits(config.data, config.seed)
    out = loop.fit(config, train, test, info["num_classes"], sys.argv[1], "full_ft")
    leaves = P.flatten(out["variables"]["params"])
    split = sorted(k for k, v in leaves.items() if "fsdp" in str(v.sharding.spec))
    shard_shapes = {k: v.addressable_shards[0].data.shape for k, v in leaves.items() if k in split}
    flat = {k: np.asarray(v) for k, v in P.flatten(jax.device_get(out["variables"])).items()}
    np.savez(sys.argv[1] + "/params.npz", split=np.array(split, dtype=object),
             state_mb=out["summary"]["state_mb_per_device"], **flat)
    print("split", len(split), "of", len(leaves), shard_shapes)
""")


def run_fsdp(devices, workdir, mesh):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", FSDP_SCRIPT, str(workdir), mesh], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(workdir / "params.npz", allow_pickle=True)), result.stdout


def test_fsdp_mesh_splits_parameters_and_matches_data_parallel(tmp_path):
    """4 host devices as data 2 × fsdp 2: parameters and Adam moments are split, the result is
    the data-parallel one, and a 1-device run resumes from the FSDP checkpoint."""
    data_parallel, _ = run_fsdp(4, tmp_path / "dp", "(('data', -1),)")
    fsdp, log = run_fsdp(4, tmp_path / "fsdp", "(('data', 2), ('fsdp', -1))")
    assert len(data_parallel.pop("split")) == 0
    split = list(fsdp.pop("split"))
    dp_mb, fsdp_mb = float(data_parallel.pop("state_mb")), float(fsdp.pop("state_mb"))
    print(f"state per device: {dp_mb:.2f} MB data-parallel, {fsdp_mb:.2f} MB with fsdp 2")
    assert fsdp_mb < 0.75 * dp_mb
    assert any("kernel" in k for k in split), log
    diff = max(float(np.max(np.abs(data_parallel[k] - fsdp[k]))) for k in data_parallel)
    print(f"max |params(data 4) - params(data 2 x fsdp 2)| after 3 steps: {diff:.3g}; {log}")
    assert diff <= 1e-5
    # the finished FSDP checkpoint restores on 1 device (no fsdp axis) to the same parameters
    resumed, _ = run_fsdp(1, tmp_path / "fsdp", "(('data', -1),)")
    resumed.pop("split"), resumed.pop("state_mb")
    assert max(float(np.max(np.abs(resumed[k] - fsdp[k]))) for k in fsdp) == 0.0


def test_mesh_config_errors_name_the_fix():
    import jax

    from tljax.train import devices as D

    with pytest.raises(ValueError, match="does not fit the 1 devices"):
        D.make_mesh((("data", 2),), jax.devices()[:1])
    with pytest.raises(ValueError, match="distinct axes from"):
        D.make_mesh((("model", -1),))
