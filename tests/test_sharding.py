"""The jit step over a data mesh: 4 devices compute what 1 device computes.

Layouts (device counts, meshes, processes) compute the same sums in different orders, so
their results agree only up to rounding; ``assert_within_rounding`` says how far that is.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import ROOT

EPS = float(np.finfo(np.float32).eps)  # 2**-23: float32's relative rounding step
# The longest sum behind one number: a kernel's gradient adds one term per example and output
# position, 32 examples x 8*8 positions of a digits image (the batch statistics add as many).
REDUCTION_LENGTH = 32 * 8 * 8
# How far BatchNorm's cancellation may amplify rounding, see assert_within_rounding.
CANCELLATION = 32


def rounding_bounds(reference, start, steps):
    """Per tensor: the largest ``||a - b||`` rounding explains between two SGD runs of ``steps``
    steps from ``start`` that sum the same terms in different orders.

    Why SGD: Adam's step m/(sqrt(v)+eps) divides each gradient component by its own size, so a
    component whose gradient is at rounding level in both runs (BatchNorm makes several sum to
    about zero) moves by up to +-lr either way: Adam runs on two layouts may differ by ~lr per
    step whatever the layout does (5.85e-5 after 3 steps at lr <= 2e-4 on an AVX-512 Zen 4,
    1.5e-8 on AVX2; XLA_FLAGS=--xla_cpu_max_isa=SSE4_2 reproduces the Zen 4 figure). SGD's
    update (with momentum and weight decay) is linear in the gradients, so its runs differ by
    no more than their gradients' rounding:

    * ``steps * eps * ||a||``: every step rounds theta + update to float32; once the updates
      differ at all, the sums may round apart, by up to eps * |theta| per step;
    * ``CANCELLATION * N * eps * ||a - start||``: the movement is sum(lr * gradient sums);
      reassociating a float32 sum of N terms changes it by at most N * eps times its terms'
      size, and BatchNorm makes some gradients (kernels feeding a BatchNorm, biases of one
      feeding another) sums whose terms cancel to a small part of their size. Changing only
      the vector width (SSE4.2 vs AVX2) needs 1.1e-3 of the movement here, a cancellation of 5;
      32 allows 7.8e-3. A layout bug moves whole tensors by far more: one of 4 devices'
      gradients left out is 25% of the update; per-device batch statistics or a wrong
      all-reduce scale change every update.

    Norms per tensor (Frobenius), as rounding moves single elements and a bug whole tensors.
    Also right for BatchNorm's running statistics (averages of batch sums; start: 0 and 1).
    """
    return {k: steps * EPS * np.linalg.norm(a) + CANCELLATION * REDUCTION_LENGTH * EPS * np.linalg.norm(a - start[k])
            for k, a in reference.items()}


def assert_within_rounding(a, b, start, steps, what):
    """``a`` and ``b`` (flat dicts of arrays, e.g. two layouts' final variables) agree to rounding."""
    assert a.keys() == b.keys() and set(a) <= set(start), (sorted(set(a) ^ set(b)), sorted(set(a) - set(start)))
    bounds = rounding_bounds(a, start, steps)
    diffs = {k: float(np.linalg.norm(a[k] - b[k])) for k in a}
    worst = max(a, key=lambda k: diffs[k] / bounds[k] if bounds[k] else float(diffs[k] > 0) * np.inf)
    print(f"{what}: max |diff| {max(float(np.max(np.abs(a[k] - b[k]))) for k in a):.3g}; worst tensor {worst}: "
          f"||diff|| {diffs[worst]:.3g} = {diffs[worst] / bounds[worst]:.3g} of its rounding bound {bounds[worst]:.3g}")
    over = {k: (diffs[k], bounds[k]) for k in a if diffs[k] > bounds[k]}
    assert not over, f"{what}: beyond rounding (||diff||, bound): {over}"
    # the start is the runs' own (another initialisation would be ~1.4x a kernel's norm away): a few small
    # steps move every kernel by far less than its size
    kernels = [k for k in a if k.endswith("kernel")]
    assert kernels and all(np.linalg.norm(a[k] - start[k]) < 0.5 * np.linalg.norm(start[k]) for k in kernels)


def initial_variables(config, num_classes):
    """What training starts from: the model initialised on one example, as the loop does."""
    import jax

    from tljax import data, models
    from tljax import params as P

    train, _, _ = data.load_splits(config.data, config.seed)
    model = models.create(config.arch, num_classes, **config.get("model", {}))
    init = jax.jit(lambda rng, x: model.init(rng, x, train=False))
    variables = init(jax.random.PRNGKey(config.seed), np.asarray(train["image"][:1]))
    flat = P.flatten(jax.device_get({"params": variables["params"], "batch_stats": variables["batch_stats"]}))
    return {k: np.asarray(v) for k, v in flat.items()}


SCRIPT = textwrap.dedent("""
    import sys, jax, numpy as np
    from tljax import data, params as P
    from tljax.config import load_file
    from tljax.train import devices as D, loop
    config = load_file("configs/digits_transfer.py:runlocal")
    config.num_steps, config.optimizer = 3, "sgd"  # linear in the gradients: see rounding_bounds
    train, test, info = data.load_splits(config.data, config.seed)
    out = loop.fit(config, train, test, info["num_classes"], sys.argv[1], "full_ft")
    assert out.summary["num_devices"] == jax.device_count()
    try:
        D.check_global_batch(30, D.make_mesh())
        message = "no error"
    except ValueError as e:
        message = str(e)
    flat = {k: np.asarray(v) for k, v in P.flatten(jax.device_get(out.variables)).items()}
    np.savez(sys.argv[1] + "/params.npz", message=message, devices=jax.device_count(), **flat)
""")


def run_on(devices, workdir):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", SCRIPT, str(workdir)], cwd=ROOT, env=env, check=True, capture_output=True)
    return dict(np.load(workdir / "params.npz"))


def test_four_devices_match_one(tmp_path):
    from tljax.config import load_file

    one = run_on(1, tmp_path / "one")
    four = run_on(4, tmp_path / "four")
    assert int(one.pop("devices")) == 1 and int(four.pop("devices")) == 4
    assert str(one.pop("message")) == "no error"
    assert "batch_size 30 does not divide the 4 devices" in str(four.pop("message"))
    assert one.keys() == four.keys()
    start = initial_variables(load_file(os.path.join(ROOT, "configs/digits_transfer.py:runlocal")), 5)
    assert_within_rounding(one, four, start, 3, "1 device vs 4 devices after 3 SGD steps")
    assert any(not np.array_equal(one[k], 0) for k in one)


FSDP_SCRIPT = textwrap.dedent("""
    import sys, ast, jax, numpy as np
    from tljax import data, params as P
    from tljax.config import load_file
    from tljax.train import devices as D, loop
    config = load_file("configs/digits_transfer.py")  # the full-width model: kernels big enough to split
    config.num_steps, config.ckpt_every, config.batch_size = 3, 0, 32
    config.optimizer = "sgd"  # linear in the gradients: see rounding_bounds; momentum is optimizer state too
    config.mesh = ast.literal_eval(sys.argv[2])
    train, test, info = data.load_splits(config.data, config.seed)
    out = loop.fit(config, train, test, info["num_classes"], sys.argv[1], "full_ft")
    leaves = P.flatten(out.variables["params"])  # host copies; where they lived is the loop's plan:
    plan = P.flatten(D.state_sharding(out.variables["params"], D.make_mesh(config.mesh)))
    split = sorted(k for k, sharding in plan.items() if "fsdp" in str(sharding.spec))
    shard_shapes = {k: plan[k].shard_shape(leaves[k].shape) for k in split}
    flat = {k: np.asarray(v) for k, v in P.flatten(jax.device_get(out.variables)).items()}
    np.savez(sys.argv[1] + "/params.npz", split=np.array(split, dtype=object),
             state_mb=out.summary["state_mb_per_device"], **flat)
    print("split", len(split), "of", len(leaves), shard_shapes)
""")


def run_fsdp(devices, workdir, mesh):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", FSDP_SCRIPT, str(workdir), mesh], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(workdir / "params.npz", allow_pickle=True)), result.stdout


def test_fsdp_mesh_splits_parameters_and_matches_data_parallel(tmp_path):
    """4 host devices as data 2 × fsdp 2: parameters and optimizer state (SGD's momentum) are
    split, the result is the data-parallel one, and a 1-device run resumes from the FSDP checkpoint."""
    from tljax.config import load_file

    data_parallel, _ = run_fsdp(4, tmp_path / "dp", "(('data', -1),)")
    fsdp, log = run_fsdp(4, tmp_path / "fsdp", "(('data', 2), ('fsdp', -1))")
    assert len(data_parallel.pop("split")) == 0
    split = list(fsdp.pop("split"))
    dp_mb, fsdp_mb = float(data_parallel.pop("state_mb")), float(fsdp.pop("state_mb"))
    print(f"state per device: {dp_mb:.2f} MB data-parallel, {fsdp_mb:.2f} MB with fsdp 2")
    assert fsdp_mb < 0.75 * dp_mb
    assert any("kernel" in k for k in split), log
    start = initial_variables(load_file(os.path.join(ROOT, "configs/digits_transfer.py")), 5)
    print(log)
    assert_within_rounding(data_parallel, fsdp, start, 3, "data 4 vs data 2 x fsdp 2 after 3 SGD steps")
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
