"""Preprocess: registry values match timm's pretrained_cfg, folders give theirs, predict's image
path matches training's, bad inputs name what was expected, contradictions warn once."""

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from tljax import pretrained
from tljax.data import augment, image_folder
from tljax.data import preprocess as PP
from tljax.data.preprocess import Preprocess


def test_constants_equal_the_training_normalisation():
    assert (PP.IMAGENET_MEAN, PP.IMAGENET_STD, PP.CAFFE_BGR_MEAN) == (
        augment.IMAGENET_MEAN, augment.IMAGENET_STD, augment.CAFFE_BGR_MEAN)
    x = np.random.default_rng(0).random((2, 5, 5, 3), np.float32)
    for kind in augment.NORMALIZE:
        ours = PP.normalize(x, PP.from_normalize(kind))
        np.testing.assert_allclose(ours, np.asarray(augment.normalize(x, kind)), rtol=1e-5, atol=1e-4)
        assert PP.normalize_kind(PP.from_normalize(kind)) == kind


def test_registry_entries_carry_timms_values():
    timm = pytest.importorskip("timm")
    for name, weights in pretrained.REGISTRY.items():
        p = pretrained.preprocess_of(name)
        assert p is weights.preprocess and p is not None, name
        if weights.format != "torchvision" or name.startswith("vit"):
            continue
        cfg = timm.models.get_pretrained_cfg(name)
        size = (cfg.test_input_size or cfg.input_size)[1]
        assert (p.mean, p.std, p.input_size, p.interpolation) == (cfg.mean, cfg.std, size, cfg.interpolation), name
        assert p.crop_fraction == pytest.approx(cfg.test_crop_pct or cfg.crop_pct, abs=1e-3), name
    assert PP.normalize_kind(pretrained.preprocess_of("vgg16.keras_in1k")) == "caffe_bgr"
    assert pretrained.preprocess_of("vit_b16.tv_in1k") == Preprocess()  # torchvision: resize 256, crop 224


def test_timm_and_hugging_face_folders(tmp_path):
    timm_dir, hf_dir = tmp_path / "timm", tmp_path / "hf"
    timm_dir.mkdir(), hf_dir.mkdir()
    (timm_dir / "config.json").write_text(json.dumps({"architecture": "vit_base_patch16_224", "pretrained_cfg": {
        "input_size": [3, 224, 224], "interpolation": "bicubic", "crop_pct": 0.9, "mean": [0.5] * 3,
        "std": [0.5] * 3}}))
    assert pretrained.preprocess_of(timm_dir) == Preprocess((0.5,) * 3, (0.5,) * 3, 224, 0.9, "bicubic")
    (hf_dir / "preprocessor_config.json").write_text(json.dumps({
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "size": {"shortest_edge": 256},
        "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "resample": 3}))
    assert pretrained.preprocess_of(hf_dir) == Preprocess(input_size=224, crop_fraction=0.875,
                                                          interpolation="bicubic")
    vit = PP.from_hf_processor({"size": {"height": 384, "width": 384}, "image_mean": [0.5] * 3,
                                "image_std": [0.5] * 3, "resample": 2})
    assert (vit.input_size, vit.crop_fraction, vit.interpolation) == (384, 1.0, "bilinear")
    assert pretrained.preprocess_of(tmp_path / "missing") is None


def test_a_timm_hub_folder_loads_with_its_preprocess(tmp_path):
    timm = pytest.importorskip("timm")
    from timm.models import _hub

    _hub.save_for_hf(timm.create_model("resnet18", pretrained=False), str(tmp_path), safe_serialization=True)
    loaded = pretrained.load_with_preprocess(tmp_path)  # the features model: no head to initialise
    assert loaded.arch == "resnet18" and loaded.model_kwargs == {} and "head" not in loaded.variables["params"]
    assert loaded.preprocess.interpolation == "bicubic" and loaded.preprocess.mean == PP.IMAGENET_MEAN
    assert loaded.preprocess == PP.from_timm_cfg(json.loads((tmp_path / "config.json").read_text())["pretrained_cfg"])


def write_image(path, size=(13, 9), mode="RGB"):
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), np.uint8)).convert(mode).save(path)
    return path


def test_image_files_are_read_as_the_image_folder_source_reads_them(tmp_path):
    p = PP.from_normalize("imagenet", 3, 8)
    for i, mode in enumerate(("RGB", "L", "P", "RGBA")):
        path = write_image(tmp_path / f"{i}.png", mode=mode)
        np.testing.assert_array_equal(PP.load_image(path, p), image_folder.decode(str(path), 8))
    cropped = PP.load_image(path, Preprocess(input_size=6, crop_fraction=0.75))  # resize 8, crop 6
    assert cropped.shape == (6, 6, 3)
    gray = PP.prepare_images([str(path)], PP.from_normalize("none", 1, 8))
    assert gray.shape == (1, 8, 8, 1) and gray.dtype == np.float32 and gray.max() <= 1


def test_prepare_images_names_what_it_expected(tmp_path):
    p = PP.from_normalize("none", 1, 8)
    assert PP.prepare_images(np.zeros((2, 8, 8), np.uint8), p).shape == (2, 8, 8, 1)
    assert PP.prepare_images(np.full((8, 8, 1), 255, np.uint8), p).max() == 1.0
    with pytest.raises(ValueError, match=r"expected images of shape \(n, 8, 8, 1\).*got shape \(2, 9, 9, 1\)"):
        PP.prepare_images(np.zeros((2, 9, 9, 1), np.float32), p)
    with pytest.raises(ValueError, match=r"\(n, 8, 8, 1\).*got dtype int64"):
        PP.prepare_images(np.zeros((2, 8, 8, 1), np.int64), p)
    with pytest.raises(ValueError, match=r"got dtype <U"):
        PP.prepare_images(["not an image", "x"], p)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match=r"bad\.jpg: cannot read it as an image.*expected an image file"):
        PP.prepare_images([bad], p)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        PP.prepare_images([str(tmp_path / "missing.png")], p)


def test_round_trip_and_validation():
    p = Preprocess(input_size=(32, 48), crop_fraction=0.9, interpolation="bicubic")
    assert Preprocess.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    with pytest.raises(ValueError, match="interpolation 'cubic'"):
        Preprocess(interpolation="cubic")
    with pytest.raises(ValueError, match="one value per channel"):
        Preprocess(mean=(0.5,), std=(0.5, 0.5))
    with pytest.raises(ValueError, match="no field 'size'"):
        Preprocess.from_dict({"size": 3})


def test_a_contradicting_config_warns_once_naming_both():
    expected = pretrained.preprocess_of("resnet50.tv_in1k")
    messages = PP.mismatches(expected, "none", (96, 96), "weights 'resnet50.tv_in1k'")
    assert len(messages) == 2
    assert "normalize='none'" in messages[0] and "0.485" in messages[0] and "normalize='imagenet'" in messages[0]
    assert "224×224" in messages[1] and "96×96" in messages[1]
    assert PP.mismatches(expected, "imagenet", 224, "w") == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            for message in messages:
                PP.warn_once(message)
    assert [str(w.message) for w in caught] == messages
    assert all(issubclass(w.category, PP.PreprocessMismatch) for w in caught)
