"""Numerical parity of converted weights with the source frameworks (CPU, float32, eval mode).

Sources are built with random weights *and* random BatchNorm running statistics (see
``randomize_``), converted, and run on the same random input: max |Δ| of the outputs must be
≤ 1e-4 with outputs of order 1.
The references come from the ``parity`` extra (CI installs it, so these never skip there).
"""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports keras

torch = pytest.importorskip("torch")

import jax.numpy as jnp  # noqa: E402

from tljax import convert, models  # noqa: E402
from tljax.params import WeightMismatchError  # noqa: E402

TOL = 1e-4
torch.set_num_threads(2)


def randomize_(module: "torch.nn.Module", size: int = 64, seed: int = 0):
    """Random weights, and random BatchNorm running statistics of a realistic scale.

    BatchNorm affine parameters are drawn at random; the running statistics are first set to those
    of random images (one cumulative pass in train mode, so the outputs stay of order 1 through
    the depth of the net, as with trained weights), then randomly perturbed (mean shifted by up
    to ±0.2 std, variance scaled by 0.5–2), so that a conversion mixing up mean and var, or
    reading the wrong layer's statistics, cannot pass. Zero-initialised tensors (heads, biases,
    class tokens) are made random too.
    """
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.2, generator=g)
        for p in module.parameters():
            if not p.any():
                p.normal_(0.0, 0.05, generator=g)
        if norms:
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # cumulative average: one pass sets the statistics
            module.train()(torch.randn(4, 3, size, size, generator=g))
            for m in norms:
                std = m.running_var.sqrt()
                m.running_mean.add_(std * torch.empty_like(std).uniform_(-0.2, 0.2, generator=g))
                m.running_var.mul_(torch.empty_like(std).uniform_(0.5, 2.0, generator=g))
    return module.eval()


def compare(ref: np.ndarray, out, what: str) -> float:
    out = np.asarray(out)
    assert out.shape == ref.shape, what
    scale = float(np.abs(ref).max())
    assert 0.05 < scale < 100, f"{what}: reference outputs of magnitude {scale}, the tolerance would be meaningless"
    diff = float(np.abs(out - ref).max())
    print(f"\n{what}: max |diff| {diff:.2e} (max |output| {scale:.2f})")
    assert diff <= TOL, f"{what}: max |diff| {diff:.3e} > {TOL}"
    return diff


def image_parity(ref_model, arch, source, size, batch=2, seed=0):
    x = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(x)).numpy()
    start = time.perf_counter()
    variables = convert.from_torch(ref_model.state_dict(), arch, source)
    seconds = time.perf_counter() - start
    print(f"\nconverted {source} {arch} in {seconds:.2f} s")
    model = models.create(arch, num_classes=ref.shape[-1])
    out = model.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)), train=False)
    return compare(ref, out, f"{source} {arch} at {size}²")


@pytest.mark.parametrize("arch,size", [("resnet18", 64), ("resnet50", 64), ("vgg16_bn", 32), ("vit_b16", 224)])
def test_torchvision_parity(arch, size):
    torchvision = pytest.importorskip("torchvision")
    name = {"vit_b16": "vit_b_16"}.get(arch, arch)
    torch.manual_seed(0)
    ref_model = randomize_(getattr(torchvision.models, name)(weights=None), size)
    image_parity(ref_model, arch, "torchvision", size, batch=1 if arch == "vit_b16" else 2)


@pytest.mark.parametrize("timm_name,arch,size", [("resnet50", "resnet50", 64),
                                                  ("vit_base_patch16_224", "vit_b16", 224)])
def test_timm_parity(timm_name, arch, size):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref_model = randomize_(timm.create_model(timm_name, pretrained=False), size)
    image_parity(ref_model, arch, "timm", size, batch=1 if arch == "vit_b16" else 2)


def small_bert_config(transformers):
    return transformers.BertConfig(vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=128, max_position_embeddings=40, type_vocab_size=2,
                                   num_labels=3)


def bert_inputs(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 99, (2, 12))
    mask = np.ones((2, 12), np.int64)
    mask[1, 7:] = 0  # a padded sequence
    types = rng.integers(0, 2, (2, 12))
    return ids, mask, types


def test_bert_parity():
    transformers = pytest.importorskip("transformers")
    config = small_bert_config(transformers)
    torch.manual_seed(0)
    ref_model = randomize_(transformers.BertModel(config))
    ids, mask, types = bert_inputs()
    with torch.no_grad():
        ref = ref_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                        token_type_ids=torch.from_numpy(types))
    inputs = dict(attention_mask=jnp.asarray(mask), token_type_ids=jnp.asarray(types), train=False)

    # Default: the pooler has no place in a last-hidden-state model and is dropped.
    variables = convert.from_torch(ref_model.state_dict(), "bert", "hf", config=config.to_dict())
    model = models.create("bert", config=config.to_dict())
    out = model.apply(variables, jnp.asarray(ids), **inputs)
    compare(ref.last_hidden_state.numpy(), out, "hf bert last hidden state")

    variables = convert.from_torch(ref_model.state_dict(), "bert", "hf", config=config.to_dict(), pooling="pooler")
    model = models.create("bert", config=config.to_dict(), pooling="pooler")
    compare(ref.pooler_output.numpy(), model.apply(variables, jnp.asarray(ids), **inputs), "hf bert pooler output")


def test_bert_sequence_classification_parity():
    transformers = pytest.importorskip("transformers")
    config = small_bert_config(transformers)
    torch.manual_seed(1)
    ref_model = randomize_(transformers.BertForSequenceClassification(config))
    with torch.no_grad():  # the 0.02-std initial classifier gives logits of order 0.01
        ref_model.classifier.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1))
    ids, mask, types = bert_inputs(1)
    with torch.no_grad():
        ref = ref_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                        token_type_ids=torch.from_numpy(types)).logits.numpy()
    # bert.-prefixed keys and the classifier (a head on the pooler) are recognised.
    variables = convert.from_torch(ref_model.state_dict(), "bert", "hf", config=config.to_dict())
    model = models.create("bert", num_classes=3, config=config.to_dict(), pooling="pooler")
    out = model.apply(variables, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                      token_type_ids=jnp.asarray(types), train=False)
    compare(ref, out, "hf BertForSequenceClassification logits")


def test_keras_vgg16_h5_parity(tmp_path):
    keras = pytest.importorskip("keras")
    pytest.importorskip("h5py")
    if keras.backend.backend() != "jax":
        pytest.skip(f"keras was imported with the {keras.backend.backend()!r} backend before this test")
    keras.utils.set_random_seed(0)
    ref_model = keras.applications.VGG16(weights=None, classifier_activation=None)
    rng = np.random.default_rng(0)
    for layer in ref_model.layers:  # Keras initialises biases to zero; make them count
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.05, layer.bias.shape).astype(np.float32))
    x = rng.standard_normal((1, 224, 224, 3)).astype(np.float32)
    ref = np.asarray(ref_model.predict(x, verbose=0))
    model = models.create("vgg16", num_classes=1000)
    legacy = tmp_path / "vgg16.h5"  # the layout of the published Keras 2 weights file
    ref_model.save(legacy)
    compare(ref, model.apply(convert.from_keras_h5(legacy, "vgg16"), x, train=False), "keras vgg16 (legacy .h5)")
    legacy.unlink()
    keras3 = tmp_path / "vgg16.weights.h5"
    ref_model.save_weights(keras3)
    compare(ref, model.apply(convert.from_keras_h5(keras3, "vgg16"), x, train=False), "keras vgg16 (.weights.h5)")


def test_mis_keyed_state_dict_names_key_and_nearest():
    torchvision = pytest.importorskip("torchvision")
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["layer1.0.convl.weight"] = state.pop("layer1.0.conv1.weight")  # a typo: l for 1
    state["layer2.0.bn2.weight"] = state["layer2.0.bn2.weight"][:10]  # mis-shaped
    del state["fc.bias"]  # missing
    with pytest.raises(WeightMismatchError) as err:
        convert.from_torch(state, "resnet18", "torchvision")
    message = str(err.value)
    assert "'layer1.0.convl.weight'" in message
    assert "nearest expected: 'params/backbone/layer1/block0/conv1/kernel'" in message
    assert "missing key 'params/head/bias'" in message
    assert "shape mismatch at 'params/backbone/layer2/block0/bn2/scale' (from 'layer2.0.bn2.weight')" in message


def test_numpy_state_dict_converts_without_importing_torch(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    state = {k: v.numpy() for k, v in torchvision.models.resnet18(weights=None).state_dict().items()}
    np.savez(tmp_path / "r18.npz", **state)
    code = ("import sys, numpy as np; from tljax import convert; "
            f"v = convert.from_torch(dict(np.load({str(tmp_path / 'r18.npz')!r})), 'resnet18', 'torchvision'); "
            "assert v['params']['head']['kernel'].shape == (512, 1000); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
