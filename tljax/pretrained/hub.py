"""Weights by Hugging Face Hub name, fetched with ``huggingface_hub.snapshot_download``.

Names: ``hf-hub:<org>/<name>[@<revision>]``, ``timm/<name>[@<revision>]`` (timm's Hub repositories;
a local path of that name wins when one exists) and the ``HUB_REGISTRY`` names. The revision is a
branch, tag or commit sha; without one the default branch is used.

huggingface_hub does the fetching, so what its users rely on holds: its cache (``HF_HUB_CACHE``,
``HF_HOME``; default ``~/.cache/huggingface/hub``), ``HF_ENDPOINT`` (mirrors), ``HF_HUB_OFFLINE=1``
(cache only), tokens from ``HF_TOKEN`` or ``hf auth login``, and a cached commit sha never touching
the network. The snapshot folder is then read like a local Hugging Face / timm folder.

Only what tljax reads is fetched: ``config.json``, image processor and tokenizer files,
``tljax_config.json``, and the weights: ``model.safetensors`` (or its shards and index), else
``pytorch_model.bin`` (or its shards) when the revision has no safetensors.

Failures raise ``HubError`` (a ``DownloadError``) naming the repository, the revision and what to
do. Partial files: huggingface_hub (2.x) writes each file to ``blobs/<etag>.<random>.incomplete``
while holding ``.locks/<repo folder>/<etag>.lock``, renames it once whole (the snapshot's link is
made after that) and deletes it when the download fails in Python; older versions kept
``blobs/<etag>.incomplete`` to resume. Either kind whose lock nobody holds (a failed or killed
download) is deleted here before each download and after a failed one, so the cache holds whole
files only. A snapshot missing files after a failure is completed by the next online load.
"""

from __future__ import annotations

import contextlib
import os
from fnmatch import fnmatch
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from tljax.pretrained.download import DownloadError
from tljax.pretrained.registry import HUB_REGISTRY, HUB_REPO_ID

try:
    import fcntl
except ImportError:  # Windows: an open file cannot be deleted, so a live download's part survives unlink
    fcntl = None

PREFIX = "hf-hub:"
TIMM = "timm/"
METADATA = ["config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "tljax_config.json"]
SAFETENSORS = ["model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors"]
TORCH = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin"]
LOGIN = ("set HF_TOKEN to an access token (https://huggingface.co/settings/tokens) or run `hf auth login` "
         "(`huggingface-cli login` with huggingface_hub < 1.0)")


class HubError(DownloadError):
    """A Hub download failed; the message names the repository, the revision and what to do."""


def parse(name_or_path) -> Optional[Tuple[str, Optional[str]]]:
    """``(repo, revision)`` when ``name_or_path`` is a Hub name (revision None: the default branch), else None.

    Only strings are Hub names (a ``Path`` is always local); a malformed ``hf-hub:`` name is a ``ValueError``.
    """
    if not isinstance(name_or_path, str):
        return None
    if name_or_path in HUB_REGISTRY:
        entry = HUB_REGISTRY[name_or_path]
        return entry.repo, entry.revision
    if name_or_path.startswith(PREFIX):
        ref = name_or_path[len(PREFIX):]
    elif name_or_path.startswith(TIMM) and not Path(name_or_path).expanduser().exists():
        ref = name_or_path
    else:
        return None
    repo, at, revision = ref.partition("@")
    if not HUB_REPO_ID.fullmatch(repo) or (at and not revision):
        raise ValueError(f"{name_or_path!r} is not a Hub name: write hf-hub:<org>/<name>[@<revision>] or "
                         f"timm/<name>[@<revision>] (revision: a branch, tag or commit sha)")
    return repo, revision or None


def storage_folder(repo: str) -> Path:
    """The repository's folder in huggingface_hub's cache (``models--<org>--<name>``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser() / ("models--" + repo.replace("/", "--"))


def download(repo: str, revision: Optional[str] = None, weights: bool = True, progress: bool = True) -> Path:
    """The snapshot folder of ``repo`` at ``revision`` with its metadata, and its weights when ``weights``
    (progress bars only then: the JSON files alone are small)."""
    import huggingface_hub as hf

    progress = progress and weights
    storage = storage_folder(repo)
    remove_stale_incomplete(storage)
    try:
        folder = _snapshot(hf, repo, revision, METADATA + (SAFETENSORS if weights else []), progress)
        if weights and not any(folder.glob("*.safetensors")):
            files = _repo_files(hf, repo, folder.name)
            if files is None or any(fnmatch(f, p) for f in files for p in TORCH):
                folder = _snapshot(hf, repo, folder.name, METADATA + TORCH, progress)  # the same commit
            if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
                listed = f"; it holds {sorted(files)}" if files is not None else ""
                raise HubError(f"{repo!r} at revision {revision or 'main'!r} has no weights file tljax reads "
                               f"(model.safetensors or pytorch_model.bin, or their shards with an index){listed}. "
                               f"Convert it with transformers/timm (save_pretrained / save_for_hf) and load "
                               f"that folder")
    except BaseException as err:
        remove_stale_incomplete(storage)
        explained = None if isinstance(err, HubError) or not isinstance(err, Exception) else \
            _explain(err, repo, revision)
        if explained is None:
            raise
        raise explained from err
    return folder


def _snapshot(hf, repo: str, revision: Optional[str], patterns: List[str], progress: bool) -> Path:
    quiet = {} if progress else {"tqdm_class": _silent_tqdm()}
    return Path(hf.snapshot_download(repo, revision=revision, allow_patterns=patterns, **quiet))


def _silent_tqdm():
    from tqdm.auto import tqdm

    class Silent(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


def _repo_files(hf, repo: str, commit: str) -> Optional[List[str]]:
    """The repository's file list at ``commit`` from the cached tree listing; None where it is not cached."""
    cached_tree = getattr(hf, "get_cached_repo_tree", None)  # huggingface_hub >= 1.x
    try:
        return [f.path for f in cached_tree(repo, revision=commit)] if cached_tree else None
    except Exception:  # noqa: BLE001 (CachedRepoTreeNotFoundError: the snapshot predates tree caching)
        return None


def _causes(err: BaseException) -> Iterator[BaseException]:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _explain(err: Exception, repo: str, revision: Optional[str]) -> Optional[HubError]:
    """One ``HubError`` saying what failed and what to do, or None for an error that is not about the Hub."""
    from huggingface_hub import constants, errors

    chain = list(_causes(err))
    kind = lambda *types: any(isinstance(e, types) for e in chain)  # noqa: E731
    status = next((e.response.status_code for e in chain
                   if isinstance(e, errors.HfHubHTTPError) and getattr(e, "response", None) is not None), None)
    at, hub, cache = f"{repo!r} at revision {revision or 'main'!r}", constants.ENDPOINT, constants.HF_HUB_CACHE
    fetch = (f"fetch it where there is network with `hf download {repo}"
             f"{' --revision ' + revision if revision else ''}` (`huggingface-cli download` with "
             f"huggingface_hub < 1.0) and copy the cache folder {cache}")
    if kind(errors.GatedRepoError):
        message = f"{repo!r} on {hub} is gated: accept its conditions at {hub}/{repo} while logged in, then {LOGIN}"
    elif kind(errors.RevisionNotFoundError):
        message = (f"{repo!r} on {hub} has no revision {revision!r}: pass a branch, tag or full commit sha from "
                   f"{hub}/{repo}/commits/main")
    elif kind(errors.RepositoryNotFoundError):
        message = (f"no repository {repo!r} on {hub}, or it is private and no valid token was sent: check the "
                   f"name; for a private repository {LOGIN}")
    elif status in (401, 403):
        message = f"{hub} refused {at} (HTTP {status}): {LOGIN}"
    elif kind(errors.OfflineModeIsEnabled) or (kind(errors.LocalEntryNotFoundError) and constants.HF_HUB_OFFLINE):
        message = (f"HF_HUB_OFFLINE is set and {at} is not (wholly) in the cache {cache}: unset HF_HUB_OFFLINE "
                   f"to download it, or {fetch}")
    elif kind(errors.LocalEntryNotFoundError):
        message = (f"cannot reach {hub} (check the network, HF_ENDPOINT and proxy settings) and {at} is not "
                   f"(wholly) in the cache {cache}: connect and load again, or {fetch}")
    elif status is not None or kind(OSError) or any(type(e).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore")
                                                    for e in chain):
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        message = (f"downloading {at} from {hub} failed ({type(err).__name__}: {reason}); no partial file is "
                   f"kept in the cache {cache}: load again to retry")
    else:
        return None
    return HubError(message)


@contextlib.contextmanager
def _unlocked(lock: Path) -> Iterator[bool]:
    """Whether no process holds huggingface_hub's ``lock`` (held for the block when free)."""
    if fcntl is None:
        yield True
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o664)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def remove_stale_incomplete(storage: Path) -> List[Path]:
    """Deletes the repository's ``blobs/*.incomplete`` files that no live download writes; returns them."""
    removed = []
    locks = storage.parent / ".locks" / storage.name
    for part in sorted((storage / "blobs").glob("*.incomplete")):
        try:
            with _unlocked(locks / f"{part.name.split('.')[0]}.lock") as free:
                if free:
                    part.unlink()
                    removed.append(part)
        except OSError:  # gone already, in use (Windows) or a read-only cache
            continue
    return removed
