"""Fetching registry files into the cache: progress bar, checksum, atomic write, no stale parts.

The cache is ``$TLJAX_CACHE`` (default ``~/.cache/tljax``). A file is written to a hidden part
file, ``.<name>.<pid>.<random>.part``, in the cache folder and renamed into place only after it
arrived whole (as long as its ``Content-Length`` says) and its checksum matched, so the cache
never holds a partial or unverified download. A download that fails, or is interrupted in
Python (``KeyboardInterrupt``), removes its part file.

A process killed outright (SIGKILL, power loss) cannot clean up, so every download first removes
the cache folder's stale part files. Staleness is decided by a lock, not by age or PID: the
writer holds an exclusive ``flock`` on its part from creation to rename, and the operating system
drops the lock when the process dies however it dies. A part that can be locked therefore has no
writer and is deleted; a locked one belongs to a live download and is left alone. Neither PID
reuse nor a slow download can make a live part look stale. The cleaner deletes only while holding
the lock, and a writer that finds its freshly created part already unlinked (the cleaner got the
lock between creation and the writer's lock) starts again with a new one. On a file system
without locks the cleaner cannot lock anything either, so it removes nothing. Without ``fcntl``
(Windows) an open file cannot be deleted, so the cleaner simply tries and skips the parts in use.
The PID in the name is for people reading the folder.
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
from typing import BinaryIO, Dict, List, Tuple

from tljax.pretrained.registry import Weights, check_cache_name

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

PART_SUFFIX = ".part"


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


def remove_stale_parts(folder: Path) -> List[Path]:
    """Deletes the part files in ``folder`` whose writer is gone (see the module docstring); returns them."""
    removed = []
    for part in folder.glob(f".*{PART_SUFFIX}"):
        try:
            if fcntl is None:
                part.unlink()  # fails while a live download has it open
            else:
                fd = os.open(part, os.O_RDWR)  # read-write: NFS emulates flock with write locks
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer lives
                    part.unlink()
                finally:
                    os.close(fd)
        except OSError:
            continue
        removed.append(part)
    return removed


def _new_part(dest: Path) -> Tuple[int, str]:
    """A new, locked part file for ``dest``: ``(fd, path)``."""
    while True:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.{os.getpid()}.", suffix=PART_SUFFIX)
        if fcntl is None:
            return fd, tmp
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # blocks only while a cleaner checks this very file
        except OSError:  # a file system without locks: the download works, its part is never judged stale
            return fd, tmp
        if os.fstat(fd).st_nlink:
            return fd, tmp
        os.close(fd)  # a cleaner removed it before we held the lock: start over


def _stream(url: str, out: BinaryIO, progress: bool, chunk: int = 1 << 20) -> Dict[str, str]:
    """Copies ``url`` into ``out`` and returns its hashes, hashing while it streams.

    A body shorter than its ``Content-Length`` (the connection closed early) raises ``http.client.IncompleteRead``.
    """
    from tqdm.auto import tqdm

    sha256, md5 = hashlib.sha256(), hashlib.md5()
    received = 0
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=os.path.basename(url),
                  disable=not progress) as bar:
            while block := response.read(chunk):
                out.write(block)
                sha256.update(block)
                md5.update(block)
                received += len(block)
                bar.update(len(block))
    if total is not None and received < total:
        raise http.client.IncompleteRead(b"", total - received)
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


def _reason(err: BaseException, got: int) -> str:
    if isinstance(err, http.client.IncompleteRead) and err.expected is not None:
        got += len(err.partial or b"")
        return f"the connection closed after {got} of {got + err.expected} bytes"
    return str(getattr(err, "reason", err))


def fetch(weights: Weights, progress: bool = True) -> Path:
    """The cached, verified file for ``weights``, downloading it first if needed."""
    dest = cache_dir() / check_cache_name(weights.cache_name, weights.url)
    if not (weights.sha256 or weights.md5):
        warnings.warn(f"no checksum is recorded for {weights.url}; the file is used unverified", stacklevel=3)
    if dest.exists():  # also covers a file placed by hand: verify it the same way
        try:
            check_hashes(file_hashes(dest), weights, f"cached file {dest}")
        except ChecksumError as err:
            raise ChecksumError(f"{err}. Delete it to download {weights.url} again.") from None
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(dest.parent)
    fd, tmp = _new_part(dest)
    try:
        with os.fdopen(fd, "wb") as out:  # closing it releases the lock
            try:
                hashes = _stream(weights.url, out, progress)
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
                raise DownloadError(
                    f"could not download {weights.url} ({_reason(err, out.tell())}). Without network access, "
                    f"download it on another machine and place it at {dest} (the cache folder is $TLJAX_CACHE, "
                    f"default ~/.cache/tljax); it is checked against the recorded checksum on use.") from err
            check_hashes(hashes, weights, f"{weights.url} (download discarded, nothing cached)")
            out.flush()
            if fcntl is not None:
                os.replace(tmp, dest)  # while locked: a cleaner never sees an unlocked part of a live download
        if os.path.exists(tmp):  # Windows cannot rename an open file
            os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
