"""Pretrained weights on bad input: cache names that escape the cache, broken or killed downloads, and
unreadable checkpoint files all fail with a message naming the file and what was expected."""

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tljax import pretrained
from tljax.pretrained import DownloadError, Weights
from tljax.pretrained.download import fetch


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("TLJAX_CACHE", str(path))
    return path


@pytest.fixture
def server(monkeypatch):
    """An HTTP server on 127.0.0.1: ``routes[url path] = (body, mode)``.

    ``mode``: ``"ok"`` sends the body; ``"drop"`` promises the whole body, sends half and closes the
    connection; ``"stall"`` sends half and then waits until the test ends.
    """
    routes, hits, release = {}, [], threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if self.path not in routes:
                self.send_error(404)
                return
            body, mode = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if mode == "ok" else body[:len(body) // 2])
            self.wfile.flush()
            if mode == "stall":
                release.wait(120)
            self.close_connection = True

        def log_message(self, *args):
            pass

    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_port}", routes=routes, hits=hits)
    release.set()
    httpd.shutdown()
    httpd.server_close()


BODY = bytes(range(256)) * 400  # 100 KiB; the download tests never parse it


def weights_for(server, path="/w/blob.npz", body=BODY, mode="ok", **kw):
    server.routes[path] = (body, mode)
    return Weights(server.url + path, "resnet_digits", "tljax", sha256=hashlib.sha256(body).hexdigest(), **kw)


def files_in(path: Path):
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


@pytest.mark.parametrize("name", ["../outside.npz", "/tmp/abs.npz", "sub/dir.npz", "sub\\dir.npz", "..",
                                  ".hidden.part"])
def test_cache_name_outside_the_cache_is_refused(name):
    with pytest.raises(ValueError, match=r"cache.*plain file name"):
        Weights("https://example.com/w/ok.npz", "resnet_digits", "tljax", sha256="ab", filename=name)


def test_url_without_a_file_name_is_refused():
    with pytest.raises(ValueError, match=r"https://example\.com/w/.*filename="):
        Weights("https://example.com/w/", "resnet_digits", "tljax", sha256="ab")


def test_dropped_connection_says_how_much_arrived_and_leaves_no_part(cache, server):
    weights = weights_for(server, mode="drop")
    with pytest.raises(DownloadError, match=rf"{weights.url}.*closed after {len(BODY) // 2} of {len(BODY)} bytes"):
        fetch(weights, progress=False)
    assert files_in(cache) == []


def test_stale_part_of_a_killed_download_is_removed_by_the_next_download(cache, server):
    weights = weights_for(server, mode="stall")
    script = textwrap.dedent(f"""
        from tljax.pretrained import Weights, fetch
        fetch(Weights({weights.url!r}, "resnet_digits", "tljax", sha256={weights.sha256!r}), progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "TLJAX_CACHE": str(cache)})
    try:
        deadline = time.monotonic() + 120
        while not server.hits:  # the part file exists before the request is sent
            assert proc.poll() is None, "the downloading process ended early"
            assert time.monotonic() < deadline, "the downloading process never connected"
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: no finally clause of the download runs
        proc.wait()
    stale = files_in(cache)
    assert len(stale) == 1 and stale[0].endswith(".part")

    server.routes["/w/blob.npz"] = (BODY, "ok")
    assert fetch(weights, progress=False).read_bytes() == BODY
    assert files_in(cache) == ["blob.npz"]


def test_part_of_a_live_download_is_kept(cache, server):
    fcntl = pytest.importorskip("fcntl")
    cache.mkdir()
    live = cache / ".other.npz.1.x.part"
    with open(live, "wb") as f:  # a writer that still holds its lock
        fcntl.flock(f, fcntl.LOCK_EX)
        fetch(weights_for(server), progress=False)
        assert files_in(cache) == [live.name, "blob.npz"]


def test_interrupted_download_removes_its_part(cache, server, monkeypatch):
    from tqdm.auto import tqdm

    def interrupt(self, n=1):
        raise KeyboardInterrupt

    monkeypatch.setattr(tqdm, "update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        fetch(weights_for(server), progress=False)
    assert files_in(cache) == []


# Unreadable checkpoints: a good file's bytes, damaged; the message names the file and the format expected.
def good_bytes(suffix, tmp_path):
    path = tmp_path / f"good{suffix}"
    arrays = {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}
    if suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(arrays, str(path))
    elif suffix == ".pth":
        torch = pytest.importorskip("torch")
        torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)
    elif suffix == ".npz":
        np.savez(path, **arrays)
    elif suffix == ".h5":
        h5py = pytest.importorskip("h5py")
        with h5py.File(path, "w") as f:
            f["block1_conv1/kernel"] = arrays["conv1.weight"]
    return path.read_bytes()


DAMAGE = {"truncated": lambda b: b[:len(b) // 2], "garbage": lambda b: b"this is not a checkpoint\n" * 3,
          "empty": lambda b: b""}
EXPECTED = {".safetensors": "safetensors", ".pth": "torch.save", ".npz": "numpy.savez", ".h5": "HDF5"}


@pytest.mark.parametrize("suffix,damage", [(s, d) for s in EXPECTED for d in ("truncated", "garbage")]
                         + [(".pth", "empty")])
def test_unreadable_checkpoint_names_the_file_and_the_expected_format(tmp_path, suffix, damage):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(DAMAGE[damage](good_bytes(suffix, tmp_path)))
    with pytest.raises(ValueError) as err:
        pretrained.load(path, arch="vgg16" if suffix == ".h5" else "resnet18", source="torchvision")
    message = str(err.value)
    assert str(path) in message and EXPECTED[suffix] in message and "truncated or corrupt" in message, message
    assert not isinstance(err.value, pretrained.UnsafeCheckpointError)  # damaged, not dangerous


def test_hugging_face_folder_with_a_broken_config_names_it(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert",')
    (folder / "model.safetensors").write_bytes(good_bytes(".safetensors", tmp_path))
    with pytest.raises(ValueError, match=rf"{folder / 'config.json'}: .*JSON"):
        pretrained.load(folder)
