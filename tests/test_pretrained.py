"""Registry download (local HTTP server), cache and checksums; safe loading; load() semantics."""

import hashlib
import pickle
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import models, pretrained
from tljax.params import flatten
from tljax.pretrained import ChecksumError, DownloadError, UnsafeCheckpointError, Weights


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("TLJAX_CACHE", str(path))
    return path


@pytest.fixture
def server(monkeypatch):
    """An HTTP server on 127.0.0.1 serving ``files`` (URL path → bytes) and recording each request."""
    files, hits = {}, []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_port}", files=files, hits=hits)
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    """A small tljax checkpoint (``resnet_digits``, 10-way head) as npz bytes, with its variables."""
    model = models.create("resnet_digits", num_classes=10)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
    path = pretrained.save(tmp_path_factory.mktemp("ckpt") / "digits.npz", variables, "resnet_digits")
    return path.read_bytes(), variables


def same_tree(a, b):
    fa, fb = flatten(a), flatten(b)
    return fa.keys() == fb.keys() and all(np.array_equal(np.asarray(fa[k]), np.asarray(fb[k])) for k in fa)


def files_in(path: Path):
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def test_registry_download_is_cached_and_reused(cache, server, digits_checkpoint, monkeypatch):
    data, variables = digits_checkpoint
    server.files["/w/digits.npz"] = data
    sha256 = hashlib.sha256(data).hexdigest()
    monkeypatch.setitem(pretrained.REGISTRY, "digits.test", Weights(server.url + "/w/digits.npz", "resnet_digits",
                                                                     "tljax", sha256=sha256))
    _, loaded = pretrained.load("digits.test", keep_head=True, progress=False)
    assert same_tree(loaded, variables)
    assert files_in(cache) == ["digits.npz"]
    _, again = pretrained.load("digits.test", keep_head=True, progress=False)
    assert same_tree(again, variables)
    assert server.hits == ["/w/digits.npz"]  # the second load made no request

    # torchvision publishes only a sha256 prefix (in the file name); a prefix verifies too.
    monkeypatch.setitem(pretrained.REGISTRY, "digits.prefix", Weights(
        server.url + "/w/digits.npz", "resnet_digits", "tljax", sha256=sha256[:8], filename="digits-prefix.npz"))
    model, features = pretrained.load("digits.prefix", progress=False)
    assert "head" not in features["params"] and model.num_classes is None


def test_checksum_mismatch_is_refused_and_leaves_no_file(cache, server, digits_checkpoint, monkeypatch):
    data, _ = digits_checkpoint
    server.files["/w/digits.npz"] = data
    wrong = "0" * 64
    monkeypatch.setitem(pretrained.REGISTRY, "digits.bad", Weights(server.url + "/w/digits.npz", "resnet_digits",
                                                                    "tljax", sha256=wrong))
    with pytest.raises(ChecksumError) as err:
        pretrained.load("digits.bad", progress=False)
    assert wrong in str(err.value) and hashlib.sha256(data).hexdigest() in str(err.value)
    assert files_in(cache) == []  # neither the file nor a partial download


def test_hand_placed_cached_file_is_verified(cache, digits_checkpoint, monkeypatch):
    data, _ = digits_checkpoint
    monkeypatch.setitem(pretrained.REGISTRY, "digits.placed", Weights(
        "http://127.0.0.1:9/digits.npz", "resnet_digits", "tljax", sha256=hashlib.sha256(data).hexdigest()))
    cache.mkdir()
    (cache / "digits.npz").write_bytes(data[:-10] + b"corrupted!")
    with pytest.raises(ChecksumError, match="Delete it"):
        pretrained.load("digits.placed", progress=False)


def test_unreachable_url_names_url_and_where_to_place_the_file(cache, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/models/offline.npz"
    monkeypatch.setitem(pretrained.REGISTRY, "offline.test", Weights(url, "resnet_digits", "tljax", sha256="ab" * 32))
    with pytest.raises(DownloadError) as err:
        pretrained.load("offline.test", progress=False)
    assert url in str(err.value)
    assert str(cache / "offline.npz") in str(err.value)
    assert files_in(cache) == []


def test_unknown_name_suggests_the_nearest_registry_entry():
    with pytest.raises(FileNotFoundError, match="resnet50.tv_in1k"):
        pretrained.load("resnet50.tv_in1kk")


def test_registry_entries_are_complete():
    for name, w in pretrained.REGISTRY.items():
        assert w.url.startswith("https://") and w.arch in models.BACKBONES and w.format, name
        if w.format == "torchvision":  # the file name carries the published sha256 prefix
            assert w.sha256 and w.url.endswith(f"-{w.sha256}.pth"), name


class Payload:
    """Unpickling this writes a marker file: stands in for arbitrary code in a checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_that_runs_code_is_refused(tmp_path, writer):
    torch = pytest.importorskip("torch")
    marker, path = tmp_path / "marker.txt", tmp_path / "evil.pth"
    checkpoint = {"conv1.weight": torch.zeros(64, 3, 7, 7), "extra": Payload(marker)}
    if writer == "torch.save":
        torch.save(checkpoint, path)
    else:
        path.write_bytes(pickle.dumps(checkpoint))
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        pretrained.load(path, arch="resnet18")
    assert not marker.exists()
    if writer == "pickle.dump":  # the payload is real: a plain unpickle would have run it
        pickle.loads(path.read_bytes())
        assert marker.read_text() == "code ran"


def test_npz_with_pickled_objects_is_refused(tmp_path):
    marker, path = tmp_path / "marker.txt", tmp_path / "evil.npz"
    np.savez(path, w=np.zeros(3), evil=np.array([Payload(marker)], dtype=object))
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        pretrained.load(path, arch="resnet_digits")
    assert not marker.exists()


def test_arch_must_be_given_when_keys_do_not_say(tmp_path):
    from safetensors.numpy import save_file

    save_file({"encoder.w": np.zeros((2, 2), np.float32)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="pass arch="):
        pretrained.load(tmp_path / "x.safetensors")


def test_local_pth_heads(tmp_path):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None).eval()
    torch.save({"state_dict": ref.state_dict(), "epoch": 3}, tmp_path / "r18.pth")  # a nested training checkpoint
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        logits = ref(torch.from_numpy(x)).numpy()
    xh = jnp.asarray(x.transpose(0, 2, 3, 1))

    model, variables = pretrained.load(tmp_path / "r18.pth", keep_head=True)  # arch read off the key names
    assert np.abs(np.asarray(model.apply(variables, xh)) - logits).max() <= 1e-4

    model, new = pretrained.load(tmp_path / "r18.pth", num_classes=5, head_zero_init=True)
    assert new["params"]["head"]["kernel"].shape == (512, 5) and not np.asarray(new["params"]["head"]["kernel"]).any()
    backbone = lambda v: {c: t["backbone"] for c, t in v.items()}  # noqa: E731
    assert same_tree(backbone(new), backbone(variables))
    assert model.apply(new, xh).shape == (2, 5)

    model, features = pretrained.load(tmp_path / "r18.pth")
    assert model.apply(features, xh).shape == (2, 512)


def test_hf_folder_bert(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=16)
    torch.manual_seed(0)
    ref = transformers.BertModel(config).eval()
    ref.save_pretrained(tmp_path / "bert")
    assert (tmp_path / "bert" / "model.safetensors").exists()
    ids = np.random.default_rng(0).integers(1, 50, (2, 9))
    mask = np.ones_like(ids)
    mask[0, 5:] = 0
    with torch.no_grad():
        hidden = ref(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()

    model, variables = pretrained.load(tmp_path / "bert")
    out = model.apply(variables, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    assert np.abs(np.asarray(out) - hidden).max() <= 1e-4

    model, variables = pretrained.load(tmp_path / "bert", num_classes=2)  # masked-mean pooling + a new head
    assert model.backbone.pooling == "mean"
    assert model.apply(variables, jnp.asarray(ids), attention_mask=jnp.asarray(mask)).shape == (2, 2)
