"""The train step's options and compilation: gradient accumulation, remat, bfloat16 compute with
float32 parameters, CPU compiler options, the persistent compilation cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import data, models, strategies
from tljax import params as P
from tljax.train import state as T
from tljax.train import devices as D
from tljax.train import step as S

# A BatchNorm-free model (LayerNorm, attention, MLP): micro-batches change nothing but summation order.
TINY_VIT = dict(patch_size=2, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, image_size=8)


@pytest.fixture(scope="module")
def batch():
    from tljax.config import load_file

    from conftest import ROOT

    config = load_file(f"{ROOT}/configs/digits_transfer.py:runlocal")
    split, _, _ = data.load_splits(config.data, 0)
    return data.pipeline.train_dataset(split, 32, 0)[0]


def one_step(config, model, batch, strategy="full_ft", **options):
    """Params and metrics after one SGD step of the loop's own train step, its executable and FLOPs."""
    config.optimizer, config.warmup_steps, config.lr = "sgd", 0, 0.1
    state, tx, mask, _ = T.prepare(config, strategies.get(strategy), T.init_variables(model, batch, 0), 4)
    mesh = D.make_mesh()
    step_fn = S.make_train_step(model, tx, mask, S.frozen_batchnorms(state.batch_stats, mask), **options)
    compiled, _, flops = D.compile_train_step(step_fn, state, D.shard_batch(batch, mesh), mesh)
    before = P.flatten(jax.device_get(state.params))
    state, metrics = compiled(jax.device_put(state, D.replicated(mesh)), D.shard_batch(batch, mesh))
    return before, P.flatten(jax.device_get(state.params)), jax.device_get(metrics), compiled, flops


def test_grad_accum_equals_the_whole_batch_and_remat_is_the_same(runlocal_config, batch):
    model = models.create("vit_b16", 5, **TINY_VIT)
    before, whole, m1, _, _ = one_step(runlocal_config, model, batch)
    _, accum, m4, compiled, _ = one_step(runlocal_config, model, batch, grad_accum=4, accum_in_loop=True)
    _, unrolled, mu, compiled_cpu, _ = one_step(runlocal_config, model, batch, grad_accum=4)
    _, remat, mr, _, _ = one_step(runlocal_config, models.create("vit_b16", 5, remat=True, **TINY_VIT), batch)
    assert "while" in compiled.as_text()  # the micro-batches run in a scan (the memory-saving form)
    assert "while" not in compiled_cpu.as_text()  # on CPU by default: unrolled (loops slow convolutions)
    update = max(np.abs(whole[k] - before[k]).max() for k in whole)
    assert update > 1e-3  # the step moved the parameters
    for k in whole:
        np.testing.assert_allclose(accum[k], whole[k], rtol=0, atol=2e-6, err_msg=k)
        np.testing.assert_allclose(unrolled[k], whole[k], rtol=0, atol=2e-6, err_msg=k)
        np.testing.assert_allclose(remat[k], whole[k], rtol=0, atol=2e-6, err_msg=k)
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(m4[key], m1[key], rtol=1e-6)
        np.testing.assert_allclose(mu[key], m1[key], rtol=1e-6)
        np.testing.assert_allclose(mr[key], m1[key], rtol=1e-6)
    np.testing.assert_allclose(m4["grad_norm"], m1["grad_norm"], rtol=1e-5)


def test_remat_resnet_with_frozen_batchnorm_is_the_same(runlocal_config, batch):
    """Recomputed blocks keep frozen BatchNorms in inference mode and give the same update."""
    plain, remat = (one_step(runlocal_config, models.create("resnet_digits", 5, remat=flag, widths=(8, 16, 32)),
                             batch, "freeze_first_k:1") for flag in (False, True))
    assert remat[4] > plain[4] > 0  # the blocks' forward pass runs again
    for k in plain[1]:
        np.testing.assert_allclose(remat[1][k], plain[1][k], rtol=0, atol=2e-6, err_msg=k)
        if k.startswith("backbone/layer1"):  # frozen: bit-identical
            assert np.array_equal(remat[1][k], remat[0][k]), k
    with pytest.raises(ValueError, match="no blocks to recompute"):
        models.create("vgg16", 5, remat=True)


def test_grad_accum_must_split_evenly():
    with pytest.raises(ValueError, match="grad_accum=3"):
        D.check_grad_accum(32, 3, D.make_mesh())


def test_bfloat16_computes_in_bf16_with_float32_params(runlocal_config, batch):
    runlocal_config.dtype = "bfloat16"
    model = T.build_model(runlocal_config, 5)
    assert model.backbone.dtype == jnp.bfloat16
    before, fp32_after, m32, _, _ = one_step(runlocal_config, models.create("resnet_digits", 5, widths=(8, 16, 32)),
                                             batch)
    _, bf16_after, m16, compiled, _ = one_step(runlocal_config, model, batch)
    assert "bf16" in compiled.as_text()
    assert all(v.dtype == np.float32 for v in bf16_after.values())  # master weights stay float32
    assert abs(float(m16["loss"]) - float(m32["loss"])) < 0.02 * float(m32["loss"])  # bf16: ~3 significant digits
    # the bf16 update points the same way as the float32 one
    d32 = np.concatenate([(fp32_after[k] - before[k]).ravel() for k in before])
    d16 = np.concatenate([(bf16_after[k] - before[k]).ravel() for k in before])
    assert np.dot(d32, d16) / (np.linalg.norm(d32) * np.linalg.norm(d16)) > 0.99


def test_cpu_compiler_options_are_applied_and_unknown_ones_are_dropped(monkeypatch):
    mesh = D.make_mesh()
    lowered = jax.jit(lambda x: jnp.sin(x) * 2).lower(jnp.ones(3))
    monkeypatch.setattr(D, "CPU_COMPILER_OPTIONS", {"xla_cpu_enable_fast_math": "true"})
    assert D.compile_for(lowered, mesh)(jnp.ones(3)).shape == (3,)
    monkeypatch.setattr(D, "CPU_COMPILER_OPTIONS", {"xla_cpu_enable_fast_math": "not-a-bool"})
    with pytest.raises(jax.errors.JaxRuntimeError, match="option"):
        lowered.compile(compiler_options=D.CPU_COMPILER_OPTIONS)
    assert D.compile_for(lowered, mesh)(jnp.ones(3)).shape == (3,)  # a jaxlib without the option still compiles


@pytest.mark.slow
def test_compilation_cache_serves_a_rerun_in_another_process_without_compiling(tmp_path):
    """A second process (another hash seed, another workdir) finds every program the first one
    compiled: the cache gains no entry, and the run's results are the same."""
    import json

    from conftest import run_train

    cache = tmp_path / "xla"
    cache_all = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}  # not only compiles of >= 1 s
    run_train(tmp_path / "a", f"--config.compilation_cache={cache}", env={**cache_all, "PYTHONHASHSEED": "1"})
    first = sorted(p.name for p in cache.glob("*-cache"))
    run_train(tmp_path / "b", f"--config.compilation_cache={cache}", env={**cache_all, "PYTHONHASHSEED": "3"})
    assert len(first) >= 3 and sorted(p.name for p in cache.glob("*-cache")) == first
    a, b = (json.load(open(tmp_path / run / "summary.json")) for run in "ab")
    assert b["compilation_cache"] == str(cache) and b["accuracy"] == a["accuracy"] and b["f1_macro"] == a["f1_macro"]


def test_unwritable_compilation_cache_is_a_config_error_before_training(tmp_path):
    from conftest import run_train

    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match="config.compilation_cache=.*a_file/xla.*cannot write there"):
        D.use_compilation_cache(str(tmp_path / "a_file" / "xla"))
    result = run_train(tmp_path / "run", f"--config.compilation_cache={tmp_path / 'a_file'}", check=False)
    assert result.returncode != 0 and "--config.compilation_cache=''" in result.stderr
    assert not (tmp_path / "run" / "ckpt").exists()
    D.use_compilation_cache("")  # off: nothing set
    assert D.compilation_cache_dir() is None
