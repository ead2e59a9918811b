"""ConvNeXt (timm, Hugging Face) and EfficientNet-B0…B3 (timm): parity through ``tljax.pretrained.load``
of each source's own Hub layout, the XLA:CPU layer set, depth groups and strategies, one training run.

References are random models built locally from small configs (float32, eval mode), with random
LayerScale, BatchNorm statistics and heads, so that a wrong mapping cannot pass.
"""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from conftest import run_train  # noqa: E402
from test_convert_parity import compare, randomize_  # noqa: E402

from tljax import convert, lora, models, pretrained, strategies  # noqa: E402
from tljax import params as P  # noqa: E402
from tljax.convert.hub_config import UnsupportedArchitecture  # noqa: E402
from tljax.strategies.layout import depth_groups  # noqa: E402
from tljax.train import step as S  # noqa: E402

SIZE = 64
SMALL = dict(depths=(1, 1, 2, 1), dims=(16, 24, 32, 40))
TINY_EFFNET = dict(width_mult=0.25, depth_mult=0.5)  # both block kinds, 10 blocks, 8–80 channels
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def randomize_all_(module, size=SIZE, seed=0):
    """``randomize_`` plus LayerScale (1e-6 at init: blocks would be nearly identities) and the head."""
    randomize_(module, size, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("gamma", "layer_scale_parameter")):
                p.uniform_(0.2, 1.0, generator=g)
            elif name.startswith(("head.fc.", "classifier.")) and p.ndim == 2:
                p.normal_(0.0, p.shape[1] ** -0.5, generator=g)
    return module.eval()


def images(batch=2, size=SIZE, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)


def compiled(fn, *args):
    """``fn`` jitted for ``args``, compiled without XLA's backend optimisations (3× faster to compile here)."""
    return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)


def random_variables(model, x, seed=0):
    """Variables of ``model`` with random values of a trained net's scale, without compiling its (slow) init."""
    rng = np.random.default_rng(seed)

    def value(path, leaf):
        name, shape = path[-1].key, leaf.shape
        n = rng.standard_normal(shape).astype(np.float32)
        if name in ("scale", "var"):
            return 1.0 + 0.2 * np.abs(n)
        if name in ("bias", "mean", "gamma"):
            return 0.2 * n + (0.5 if name == "gamma" else 0.0)
        return n / np.sqrt(np.prod(shape[:-1]))  # kernels: fan-in scaling (depthwise: k·k)

    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    return jax.tree_util.tree_map_with_path(lambda p, leaf: jnp.asarray(value(p, leaf)), shapes)


def apply(model, variables, x):
    """The tljax model on NCHW ``x``; NHWC maps come back NCHW."""
    x = jnp.asarray(x.transpose(0, 2, 3, 1))
    out = np.asarray(compiled(lambda v, a: model.apply(v, a, train=False), variables, x)(variables, x))
    return out.transpose(0, 3, 1, 2) if out.ndim == 4 else out


def save_timm(model, folder):
    from timm.models import _hub

    _hub.save_for_hf(model, str(folder), safe_serialization=True)
    return folder


@pytest.mark.parametrize("name", ["convnext_atto", "convnext_tiny"])  # conv_mlp (1×1 convs) / Linear MLP
def test_timm_convnext_parity(tmp_path, name):
    torch.manual_seed(0)
    ref_model = randomize_all_(timm.create_model(name, pretrained=False, num_classes=5, **SMALL))
    x = images()
    with torch.no_grad():
        logits = ref_model(torch.from_numpy(x))
        features = ref_model.forward_head(ref_model.forward_features(torch.from_numpy(x)), pre_logits=True)
    folder = save_timm(ref_model, tmp_path / name)
    model, variables = pretrained.load(folder, keep_head=True)
    compare(logits.numpy(), apply(model, variables, x), f"timm {name} {SMALL} logits at {SIZE}²")
    _, alone = pretrained.load(folder / "model.safetensors", keep_head=True)  # no config.json: the keys say
    assert jax.tree.map(np.array_equal, alone, variables) == jax.tree.map(lambda _: True, variables)
    if name == "convnext_atto":
        model, variables = pretrained.load(folder)  # features: pooled + head.norm
        compare(features.numpy(), apply(model, variables, x), f"timm {name} features")
        model, variables = pretrained.load(folder, num_classes=3)
        assert jax.eval_shape(model.apply, variables, jnp.zeros((2, SIZE, SIZE, 3))).shape == (2, 3)


def small_hf_config(transformers):
    return transformers.ConvNextConfig(depths=[1, 1, 2, 1], hidden_sizes=[16, 24, 32, 40], num_labels=3)


def test_hf_convnext_model_parity(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ref_model = randomize_all_(transformers.ConvNextModel(small_hf_config(transformers)))
    x = images(seed=1)
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(x))
    ref_model.save_pretrained(tmp_path / "hf")
    model, variables = pretrained.load(tmp_path / "hf")
    compare(ref.pooler_output.numpy(), apply(model, variables, x), "hf ConvNextModel pooler_output")
    model, variables = pretrained.load(tmp_path / "hf", output="last_hidden_state")
    compare(ref.last_hidden_state.numpy(), apply(model, variables, x), "hf ConvNextModel last_hidden_state (NCHW)")


def test_hf_convnext_classification_parity(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1)
    ref_model = randomize_all_(transformers.ConvNextForImageClassification(small_hf_config(transformers)), seed=1)
    x = images(seed=2)
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(x)).logits.numpy()
    ref_model.save_pretrained(tmp_path / "hfc")
    model, variables = pretrained.load(tmp_path / "hfc", keep_head=True)
    compare(ref, apply(model, variables, x), "hf ConvNextForImageClassification logits")


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b2"])  # b2: widths × 1.1, rounded
def test_timm_efficientnet_parity(tmp_path, name):
    torch.manual_seed(0)
    ref_model = randomize_all_(timm.create_model(name, pretrained=False, num_classes=5))
    x = images(seed=3)
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(x)).numpy()
    folder = save_timm(ref_model, tmp_path / name)
    model, variables = pretrained.load(folder, keep_head=True)
    assert "batch_stats" in variables
    compare(ref, apply(model, variables, x), f"timm {name} logits at {SIZE}²")
    assert convert.detect_arch(ref_model.state_dict()) == name


@pytest.mark.parametrize("name", ["efficientnet_b1", "efficientnet_b3"])
def test_timm_efficientnet_shapes(name):
    """Every parameter and statistic of timm's net has its place, strictly checked, and the features' width."""
    ref_model = timm.create_model(name, pretrained=False)
    variables = convert.from_torch(ref_model.state_dict(), name, "timm")
    assert P.flatten(variables)["params/head/kernel"].shape == (ref_model.num_features, 1000)
    model = models.create(name)  # features
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    assert jax.eval_shape(model.apply, shapes, jnp.zeros((1, 32, 32, 3))).shape == (1, ref_model.num_features)


@pytest.mark.parametrize("arch,kwargs", [("convnext", dict(SMALL, drop_path_rate=0.1)),
                                         ("efficientnet_b0", dict(TINY_EFFNET, drop_path_rate=0.1))])
def test_cpu_kernels_and_remat_give_the_same_outputs(arch, kwargs):
    """Training-mode outputs (BatchNorm on batch statistics, drop-path) of the three forms; batch 4 at 64²
    keeps the last stages' batch statistics (4 values at 2×2) well conditioned."""
    x = jnp.asarray(images(4).transpose(0, 2, 3, 1))
    plain = models.create(arch, 4, **kwargs)
    variables = random_variables(plain, x)
    rngs = {"dropout": jax.random.PRNGKey(1)}
    outs = {}
    for name, model in (("plain", plain), ("cpu_kernels", models.create(arch, 4, cpu_kernels=True, **kwargs)),
                        ("remat", models.create(arch, 4, remat=True, **kwargs))):
        shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
        assert jax.tree.map(np.shape, shapes) == jax.tree.map(np.shape, variables)
        train = lambda v: model.apply(v, x, train=True, rngs=rngs, mutable=["batch_stats"])[0]  # noqa: E731
        outs[name] = np.asarray(compiled(train, variables)(variables))
    for name in ("cpu_kernels", "remat"):
        rel = np.abs(outs[name] - outs["plain"]).max() / np.abs(outs["plain"]).max()
        print(f"\n{arch} {name} vs plain (train mode): max relative |diff| {rel:.1e}")
        assert rel <= 1e-5


def test_depth_groups_strategies_and_frozen_batchnorm():
    x = jnp.zeros((2, 32, 32, 3))
    convnext = jax.eval_shape(models.create("convnext", 3, **SMALL).init, jax.random.PRNGKey(0), x)["params"]
    names = [g for g, _ in depth_groups(list(P.flatten(convnext)))]
    assert names == ["stem"] + [f"block{i}" for i in range(4)] + ["top"]
    effnet = models.create("efficientnet_b0", 3, **TINY_EFFNET)
    variables = random_variables(effnet, x)
    paths = list(P.flatten(variables["params"]))
    groups = depth_groups(paths)
    assert [g for g, _ in groups] == ["stem"] + [f"block{i}" for i in range(7)] + ["top"]
    top = [p for p in paths if p.startswith("backbone/") and not any(re.fullmatch(rx, p) for _, rx in groups[:-1])]
    assert top and all(p.startswith(("backbone/conv_head/", "backbone/bn_head/")) for p in top)

    def labels(spec, params):
        strategy = strategies.get(spec)
        if strategy.lora:  # lora.add_adapters' paths, without drawing the values (a compile per shape)
            flat = P.flatten(params)
            for path in lora.target_paths(params, strategy.lora["targets"]):
                flat.update({path.replace("/kernel", "/lora_a"): 0, path.replace("/kernel", "/lora_b"): 0})
            params = P.unflatten(flat)
        flat = P.flatten(strategies.labels_for(strategy, params))
        mults = strategy.resolve("lr_mults", list(flat))
        return flat, P.flatten(strategies.labels_from_rules(params, mults)) if mults else {}

    frozen, _ = labels("freeze_first_k:2", convnext)
    assert {k for k, v in frozen.items() if v == "frozen"} == {
        k for k in frozen if k.startswith(("backbone/stem_", "backbone/layer0/", "backbone/layer1/"))}
    _, mults = labels("llrd:0.5", convnext)
    assert (mults["backbone/stem_conv/kernel"], mults["backbone/layer3/block0/gamma"], mults["backbone/norm/scale"],
            mults["head/kernel"]) == (0.5 ** 5, 0.5, 1.0, 1.0)
    for params in (convnext, variables["params"]):
        starts = strategies.get("gradual_unfreeze:1").resolve("start_epochs", list(P.flatten(params)))
        assert max(epoch for _, epoch in starts) == len(depth_groups(list(P.flatten(params)))) - 1
        adapted, _ = labels("lora:4,8", params)
        assert any("conv_dw/lora_a" in k for k in adapted) and {v for k, v in adapted.items() if "lora_" in k} == {
            "trainable"}
    adapted, _ = labels("lora:2,targets=all_linear", convnext)
    assert {k for k in adapted if k.endswith("lora_a")} == {
        k.replace("kernel", "lora_a") for k in P.flatten(convnext) if re.search(r"mlp_fc[12]/kernel", k)}

    # freeze_first_k:1: the stem's and stage 0's BatchNorms run on their running statistics, as ResNet's do.
    mask = strategies.trainable_mask(strategies.labels_for(strategies.get("freeze_first_k:1"), variables["params"]))
    frozen = S.frozen_batchnorms(variables["batch_stats"], mask)
    assert frozen == {m.rsplit("/", 1)[0] for m in P.flatten(variables["batch_stats"])
                      if m.startswith(("backbone/bn1/", "backbone/layer0/"))}

    def train(v):
        with S.batchnorm_in_inference_mode(frozen):
            return effnet.apply(v, x + 1.0, train=True, mutable=["batch_stats"])[1]

    new = compiled(train, variables)(variables)
    before, after = P.flatten(variables["batch_stats"]), P.flatten(new["batch_stats"])
    assert {k for k in before if not np.array_equal(before[k], after[k])} == {
        k for k in before if k.rsplit("/", 1)[0] not in frozen}


def test_unsupported_architectures_name_themselves_and_the_supported_ones(tmp_path):
    v2 = timm.create_model("convnextv2_atto", pretrained=False, depths=(1, 1, 1, 1), dims=(8, 8, 8, 8))
    with pytest.raises(UnsupportedArchitecture, match=r"'convnextv2_atto'.*convnext_\(atto\|femto.*efficientnet_b"):
        pretrained.load(save_timm(v2, tmp_path / "v2"))
    hnf = timm.create_model("convnext_atto", pretrained=False, head_norm_first=True, depths=(1, 1, 1, 1),
                            dims=(8, 8, 8, 8))
    with pytest.raises(ValueError, match=r"'convnext_atto' with model_args head_norm_first=True"):
        pretrained.load(save_timm(hnf, tmp_path / "hnf"))


@pytest.mark.parametrize("arch,kwargs", [("convnext_atto", SMALL), ("efficientnet_b0", {})])
def test_finetune_smoke_run_on_a_random_timm_folder(tmp_path, arch, kwargs):
    from PIL import Image  # noqa: PLC0415

    torch.manual_seed(0)
    folder = save_timm(timm.create_model(arch, pretrained=False, num_classes=7, **kwargs), tmp_path / "w")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 4)):
        for cls in ("ants", "bees"):
            os.makedirs(tmp_path / "data" / split / cls)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / split / cls / f"{i}.png")
    run_train(tmp_path / "run", f"--config.data.path={tmp_path / 'data'}", f"--config.pretrained={folder}",
              f"--config.arch={arch}", "--config.image_size=32", "--config.num_steps=2",
              "--config.batch_size=4", "--config.eval_batch_size=8", "--config.warmup_steps=1",
              "--config.strategy=llrd:0.7", "--config.data.num_threads=1",
              config="configs/hymenoptera_resnet50.py", entry=("-m", "tljax.train"))
    with open(tmp_path / "run" / "summary.json") as f:
        summary = json.load(f)
    assert summary["num_steps"] == 2 and summary["label_names"] == ["ants", "bees"]
    assert 0.0 <= summary["accuracy"] <= 1.0
