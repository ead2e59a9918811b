"""Loading by Hugging Face Hub name, offline: a 127.0.0.1 server answers the Hub endpoints that
``huggingface_hub.snapshot_download`` calls (revision info, tree listing, file HEAD/GET with the
``X-Repo-Commit`` / ``ETag`` / ``Content-Length`` headers, ``X-Error-Code`` errors)."""

import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from hub_server import TOKEN, FakeHub, point_hub_at
from local_http import dead_url, serve
from tljax import pretrained
from tljax.data.preprocess import from_hf_processor, from_timm_cfg
from tljax.pretrained import HubError, HubWeights, hub

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    fake = FakeHub()
    with serve(fake.handler(), monkeypatch) as url:
        fake.url, fake.home, fake.cache = url, tmp_path / "hf", tmp_path / "hf" / "hub"
        point_hub_at(monkeypatch, url, fake.home)
        yield fake


def folder_files(folder: Path):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def berts(tmp_path_factory):
    """Two tiny random BERTs (Hub layout: config.json + model.safetensors), their inputs and hidden states."""
    ids = np.random.default_rng(0).integers(1, 50, (2, 9))
    out = []
    for seed in (0, 1):
        config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=64, max_position_embeddings=16)
        torch.manual_seed(seed)
        ref = transformers.BertModel(config).eval()
        folder = tmp_path_factory.mktemp(f"bert{seed}")
        ref.save_pretrained(folder)
        with torch.no_grad():
            hidden = ref(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
        out.append((folder_files(folder), hidden, ref))
    return ids, out


def bert_delta(name_or_path, ids, hidden):
    model, variables = pretrained.load(name_or_path, progress=False)
    return float(np.abs(np.asarray(model.apply(variables, jnp.asarray(ids))) - hidden).max())


def test_load_by_name_and_by_pinned_revision(fake_hub, berts):
    ids, [(old, old_hidden, _), (new, new_hidden, _)] = berts
    old_sha = fake_hub.add("org/tiny-bert", old)
    fake_hub.add("org/tiny-bert", new)  # main moves on
    delta = bert_delta("hf-hub:org/tiny-bert", ids, new_hidden)
    pinned = bert_delta(f"hf-hub:org/tiny-bert@{old_sha}", ids, old_hidden)
    print(f"BERT by Hub name: max |delta| {delta:.2e} (main), {pinned:.2e} (pinned sha)")
    assert delta <= 1e-4 and pinned <= 1e-4
    assert fake_hub.files_fetched("org/tiny-bert") == ["config.json", "model.safetensors"]
    snapshots = sorted(p.name for p in (fake_hub.cache / "models--org--tiny-bert" / "snapshots").iterdir())
    assert old_sha in snapshots and len(snapshots) == 2
    hits = len(fake_hub.hits)
    assert bert_delta(f"hf-hub:org/tiny-bert@{old_sha}", ids, old_hidden) <= 1e-4
    assert len(fake_hub.hits) == hits  # a cached commit sha needs no request at all


def test_offline_second_load_comes_from_the_cache(fake_hub, berts, tmp_path):
    """A fresh process with HF_HUB_OFFLINE=1 and no server: the environment as users set it."""
    ids, [(files, hidden, _), _] = berts
    fake_hub.add("org/tiny-bert", files)
    assert bert_delta("hf-hub:org/tiny-bert", ids, hidden) <= 1e-4
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "hidden.npy", hidden)
    code = textwrap.dedent(f"""
        import numpy as np, jax.numpy as jnp
        from tljax import pretrained
        model, variables = pretrained.load("hf-hub:org/tiny-bert", progress=False)
        out = model.apply(variables, jnp.asarray(np.load({str(tmp_path / 'ids.npy')!r})))
        print("delta", float(np.abs(np.asarray(out) - np.load({str(tmp_path / 'hidden.npy')!r})).max()))
    """)
    env = {**os.environ, "HF_HOME": str(fake_hub.home), "HF_HUB_CACHE": str(fake_hub.cache), "HF_HUB_OFFLINE": "1",
           "HF_ENDPOINT": dead_url(), "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.split("delta")[-1]) <= 1e-4


def test_timm_name_keeps_the_head_and_brings_its_preprocess(fake_hub, tmp_path):
    timm = pytest.importorskip("timm")
    from test_convert_parity import randomize_

    ref = randomize_(timm.create_model("resnet18", pretrained=False, num_classes=7), size=32)
    timm.models.save_for_hf(ref, tmp_path / "r18", safe_serialization="both")
    fake_hub.add("timm/resnet18.test", folder_files(tmp_path / "r18"))
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        logits = ref(torch.from_numpy(x)).numpy()
    loaded = pretrained.load_with_preprocess("timm/resnet18.test", keep_head=True, progress=False)
    delta = float(np.abs(np.asarray(loaded.model.apply(loaded.variables, jnp.asarray(x.transpose(0, 2, 3, 1))))
                         - logits).max())
    print(f"timm resnet18 by Hub name: max |delta| {delta:.2e}")
    assert delta <= 1e-4
    config = json.loads((tmp_path / "r18" / "config.json").read_text())
    expected = from_timm_cfg(config["pretrained_cfg"])
    assert loaded.preprocess == expected == pretrained.preprocess_of("timm/resnet18.test")
    assert fake_hub.files_fetched("timm/resnet18.test") == ["config.json", "model.safetensors"]  # not the .bin
    model, features = pretrained.load("hf-hub:timm/resnet18.test", progress=False)  # the same snapshot
    assert model.num_classes is None and "head" not in features["params"]


def test_preprocess_of_reads_only_the_json(fake_hub):
    processor = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3,
                 "size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}, "do_center_crop": True}
    fake_hub.add("org/vision", {"config.json": json.dumps({"model_type": "dinov2"}).encode(),
                                "preprocessor_config.json": json.dumps(processor).encode(),
                                "model.safetensors": b"never fetched"})
    assert pretrained.preprocess_of("hf-hub:org/vision") == from_hf_processor(processor)
    assert fake_hub.files_fetched("org/vision") == ["config.json", "preprocessor_config.json"]


def test_pytorch_bin_when_no_safetensors_and_sharded_safetensors(fake_hub, berts, tmp_path):
    ids, [(files, hidden, ref), _] = berts
    buffer = io.BytesIO()
    torch.save(ref.state_dict(), buffer)
    fake_hub.add("org/bin-only", {"config.json": files["config.json"], "pytorch_model.bin": buffer.getvalue(),
                                  "tf_model.h5": b"not fetched"})
    assert bert_delta("hf-hub:org/bin-only", ids, hidden) <= 1e-4
    assert fake_hub.files_fetched("org/bin-only") == ["config.json", "pytorch_model.bin"]
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert len(list((tmp_path / "sharded").glob("model-*-of-*.safetensors"))) > 1
    fake_hub.add("org/sharded", folder_files(tmp_path / "sharded"))
    assert bert_delta("hf-hub:org/sharded", ids, hidden) <= 1e-4


def test_unknown_repository_and_revision(fake_hub, berts):
    fake_hub.add("org/tiny-bert", berts[1][0][0])
    with pytest.raises(HubError, match=r"no repository 'org/missing'.*HF_TOKEN"):
        pretrained.load("hf-hub:org/missing", progress=False)
    with pytest.raises(HubError, match=r"'org/tiny-bert'.* no revision 'v9'"):
        pretrained.load("hf-hub:org/tiny-bert@v9", progress=False)
    assert not (fake_hub.cache / "models--org--missing" / "snapshots").exists()
    assert not list(fake_hub.cache.rglob("*.incomplete"))
    with pytest.raises(ValueError, match="hf-hub:<org>/<name>"):
        pretrained.load("hf-hub:org/x@", progress=False)


def test_offline_or_unreachable_without_a_cache(fake_hub, monkeypatch):
    point_hub_at(monkeypatch, fake_hub.url, fake_hub.home, offline=True)
    with pytest.raises(HubError, match=r"HF_HUB_OFFLINE is set and 'org/tiny-bert' at revision 'main'.*hf download"):
        pretrained.load("hf-hub:org/tiny-bert", progress=False)
    point_hub_at(monkeypatch, dead_url(), fake_hub.home)
    with pytest.raises(HubError, match=r"cannot reach .*'org/tiny-bert' at revision 'v1'"):
        pretrained.load("hf-hub:org/tiny-bert@v1", progress=False)
    assert fake_hub.hits == [] and not list(fake_hub.cache.glob("models--*/snapshots/*/*"))


def test_gated_repository_needs_a_token(fake_hub, berts, monkeypatch):
    ids, [(files, hidden, _), _] = berts
    fake_hub.add("org/gated", files, gated=True)
    with pytest.raises(HubError, match=r"'org/gated'.* is gated.*HF_TOKEN.*hf auth login"):
        pretrained.load("hf-hub:org/gated", progress=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert bert_delta("hf-hub:org/gated", ids, hidden) <= 1e-4


def test_repository_without_weights_tljax_reads(fake_hub):
    fake_hub.add("org/tf-only", {"config.json": b'{"model_type": "bert"}', "tf_model.h5": b"..."})
    with pytest.raises(HubError, match=r"no weights file tljax reads.*tf_model\.h5"):
        pretrained.load("hf-hub:org/tf-only", progress=False)


def test_interrupted_download_leaves_no_partial_file_and_a_retry_succeeds(fake_hub, berts):
    ids, [(files, hidden, _), _] = berts
    sha = fake_hub.add("org/tiny-bert", files)
    fake_hub.faults["model.safetensors"] = ["drop", "fail"]  # cut mid-file, then the resumed request fails
    with pytest.raises(HubError, match=r"downloading 'org/tiny-bert'.*no partial file.*load again"):
        pretrained.load("hf-hub:org/tiny-bert", progress=False)
    storage = fake_hub.cache / "models--org--tiny-bert"
    assert not list(storage.rglob("*.incomplete"))
    assert not (storage / "snapshots" / sha / "model.safetensors").exists()
    assert len(list((storage / "blobs").iterdir())) == 1  # config.json only: whole files alone
    assert bert_delta("hf-hub:org/tiny-bert", ids, hidden) <= 1e-4


def test_killed_downloads_part_is_removed_unless_its_writer_lives(fake_hub, berts):
    fcntl = pytest.importorskip("fcntl")
    fake_hub.add("org/tiny-bert", berts[1][0][0])
    storage = fake_hub.cache / "models--org--tiny-bert"
    (storage / "blobs").mkdir(parents=True)
    dead, live = storage / "blobs" / ("a" * 64 + ".1234abcd.incomplete"), storage / "blobs" / ("b" * 64 + ".incomplete")
    dead.write_bytes(b"half"), live.write_bytes(b"half")
    lock = fake_hub.cache / ".locks" / storage.name / ("b" * 64 + ".lock")
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a live download holds its blob's lock
        pretrained.load("hf-hub:org/tiny-bert", progress=False)
        assert not dead.exists() and live.exists()


def test_registry_hub_entries(fake_hub, berts, monkeypatch):
    for name, entry in pretrained.HUB_REGISTRY.items():
        assert hub.parse(name) == (entry.repo, entry.revision), name
        assert re.fullmatch(r"[0-9a-f]{40}", entry.revision) or entry.revision == "main", name
        assert name not in pretrained.REGISTRY
    assert hub.parse("dinov2_small.hf") == ("facebook/dinov2-small", "ed25f3a31f01632728cabb09d1542f84ab7b0056")
    assert hub.parse("timm/convnext_tiny.fb_in22k") == ("timm/convnext_tiny.fb_in22k", None)
    ids, [(old, hidden, _), (new, _, _)] = berts
    sha = fake_hub.add("org/tiny-bert", old)
    fake_hub.add("org/tiny-bert", new)
    monkeypatch.setitem(pretrained.HUB_REGISTRY, "tiny_bert.test", HubWeights("org/tiny-bert", sha))
    assert bert_delta("tiny_bert.test", ids, hidden) <= 1e-4  # the pinned commit, not main
