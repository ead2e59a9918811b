"""Fetching registry files into the cache: progress bar, checksum, atomic write.

The cache is ``$TLJAX_CACHE`` (default ``~/.cache/tljax``). A file is written to a temporary
name in the cache folder and renamed into place only after its checksum matched, so the
cache never holds a partial or unverified download.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import BinaryIO, Dict

from tljax.pretrained.registry import Weights


class DownloadError(RuntimeError):
    """The file could not be fetched; the message says where to place it by hand."""


class ChecksumError(ValueError):
    """A file's hash differs from the published one."""


def cache_dir() -> Path:
    return Path(os.environ.get("TLJAX_CACHE") or "~/.cache/tljax").expanduser()


def file_hashes(path: Path, chunk: int = 1 << 20) -> Dict[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            sha256.update(block)
            md5.update(block)
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


def check_hashes(actual: Dict[str, str], weights: Weights, what: str) -> None:
    """Raises ``ChecksumError`` naming the expected and actual hash; a sha256 may be a published prefix."""
    for algo, expected in (("sha256", weights.sha256), ("md5", weights.md5)):
        if expected and not actual[algo].startswith(expected.lower()):
            raise ChecksumError(f"{algo} mismatch for {what}: expected {expected}, got {actual[algo]}")


def _stream(url: str, out: BinaryIO, progress: bool, chunk: int = 1 << 20) -> Dict[str, str]:
    """Copies ``url`` into ``out`` and returns its hashes, hashing while it streams."""
    from tqdm.auto import tqdm

    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=os.path.basename(url),
                  disable=not progress) as bar:
            while block := response.read(chunk):
                out.write(block)
                sha256.update(block)
                md5.update(block)
                bar.update(len(block))
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


def fetch(weights: Weights, progress: bool = True) -> Path:
    """The cached, verified file for ``weights``, downloading it first if needed."""
    dest = cache_dir() / weights.cache_name
    if not (weights.sha256 or weights.md5):
        warnings.warn(f"no checksum is recorded for {weights.url}; the file is used unverified", stacklevel=3)
    if dest.exists():  # also covers a file placed by hand: verify it the same way
        try:
            check_hashes(file_hashes(dest), weights, f"cached file {dest}")
        except ChecksumError as err:
            raise ChecksumError(f"{err}. Delete it to download {weights.url} again.") from None
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                hashes = _stream(weights.url, out, progress)
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
                raise DownloadError(
                    f"could not download {weights.url} ({getattr(err, 'reason', err)}). Without network access, "
                    f"download it on another machine and place it at {dest} (the cache folder is $TLJAX_CACHE, "
                    f"default ~/.cache/tljax); it is checked against the recorded checksum on use.") from err
        check_hashes(hashes, weights, f"{weights.url} (download discarded, nothing cached)")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
