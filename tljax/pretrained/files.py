"""Reading checkpoint files without ever running code from them.

safetensors and ``.npz`` (``allow_pickle=False``) hold only arrays; ``.pth``/``.pt``/``.bin`` go
through ``torch.load(weights_only=True)``, whose unpickler admits tensors and plain containers
only; Keras ``.h5`` is read with h5py. Each reader returns ``(arrays, metadata)``: a flat
``{name: array}`` dict and the tljax metadata stored by ``save`` (arch, create kwargs) if any.

A file its reader cannot parse (truncated, corrupt, or another format under this suffix) raises
a ``ValueError`` naming the file and the format that was expected, with the reader's own
message; only a file that parses but holds Python objects raises ``UnsafeCheckpointError``.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import numpy as np

META_KEY = "__tljax__"  # npz entry / safetensors metadata key holding {"arch": …, "kwargs": …} as JSON

Arrays = Dict[str, Any]
TORCH = "a torch.save checkpoint (a zip, or a legacy pickle, of tensors)"
NPZ = "numpy.savez arrays (a zip of .npy files)"
DAMAGED_PICKLE = ("truncated", "invalid load key", "EOF", "underflow", "could not find MARK")


class UnsafeCheckpointError(ValueError):
    """The file holds Python objects beyond arrays; loading it could run code, so it is refused."""


def unreadable(path, expected: str, err: BaseException) -> ValueError:
    """The error for a checkpoint file its reader cannot parse (raise it ``from err``)."""
    reason = " ".join(str(err).split())
    said = f"{type(err).__name__}: {reason[:300]}" if reason else type(err).__name__
    return ValueError(f"{path}: cannot read it as {expected}; the file is truncated or corrupt, or another format "
                      f"under this suffix: download or save it again ({said})")


def read_torch(path: Path) -> Tuple[Arrays, dict]:
    """A ``torch.save`` file, unpickled with ``weights_only=True``; refuses anything else."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if any(s in str(err) for s in DAMAGED_PICKLE):  # a broken pickle, not a refused object
            raise unreadable(path, TORCH, err) from err
        lines = str(err).strip().splitlines()
        reason = next((line.strip() for line in lines if "Unsupported" in line), lines[0])  # what torch refused
        raise UnsafeCheckpointError(
            f"refused to load {path}: it holds Python objects other than tensors, and unpickling them could "
            f"run code (torch.load(weights_only=True): {reason}). Re-save only the tensors (safetensors or "
            f"a plain state dict) where the file is trusted.") from None
    except Exception as err:  # noqa: BLE001 (zip, EOF, OS and pickle errors all mean the same: unreadable)
        raise unreadable(path, TORCH, err) from err
    return unwrap_state_dict(obj, path), {}


def unwrap_state_dict(obj: Any, path: Path) -> Arrays:
    """The tensors of a state dict, also when nested under ``state_dict``/``model`` or saved from DataParallel."""
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict (name → tensor), got {type(obj).__name__}")
    arrays = {k: v for k, v in obj.items() if hasattr(v, "shape")}
    if not arrays:
        raise ValueError(f"{path}: the state dict holds no tensors (keys: {list(obj)[:5]})")
    if all(k.startswith("module.") for k in arrays):
        arrays = {k[len("module."):]: v for k, v in arrays.items()}
    return arrays


def read_safetensors(path: Path) -> Tuple[Arrays, dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            meta = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception as err:  # noqa: BLE001 (SafetensorError, OSError, a bad metadata JSON)
        raise unreadable(path, "safetensors (a JSON header, then the tensors' bytes)", err) from err


def read_npz(path: Path) -> Tuple[Arrays, dict]:
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # else np.load would try pickle and blame allow_pickle
            raise unreadable(path, NPZ, ValueError("no zip signature at the start"))
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop(META_KEY))) if META_KEY in arrays else {}
    except ValueError as err:
        if "allow_pickle" in str(err):  # object arrays need pickle
            raise UnsafeCheckpointError(f"refused to load {path}: {err}") from None
        raise unreadable(path, NPZ, err) from err
    except Exception as err:  # noqa: BLE001 (BadZipFile, EOFError, zlib.error, OSError)
        raise unreadable(path, NPZ, err) from err
    return arrays, meta


def read_hf_folder(path: Path) -> Tuple[Arrays, dict]:
    """A Hugging Face model folder: ``config.json`` plus ``model.safetensors`` (or ``pytorch_model.bin``).

    The meta holds the ``config.json`` dict: a transformers one (``model_type``) or timm's Hub one
    (``architecture`` and ``pretrained_cfg``); ``convert.hub_config`` reads the arch from it.
    """
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: a folder must be a Hugging Face model folder holding config.json and "
                                f"model.safetensors (or pytorch_model.bin); there is no config.json")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path / 'config.json'}: not valid JSON ({err}); expected the config.json that "
                         f"save_pretrained writes") from err
    for name, reader in (("model.safetensors", read_safetensors), ("pytorch_model.bin", read_torch)):
        if (path / name).exists():
            return reader(path / name)[0], {"config": config}
        if (path / f"{name}.index.json").is_file():  # sharded: save_pretrained(max_shard_size=...)
            return read_shards(path / f"{name}.index.json", reader), {"config": config}
    raise FileNotFoundError(f"{path}: a Hugging Face folder needs model.safetensors or pytorch_model.bin (or "
                            f"their shards with model.safetensors.index.json / pytorch_model.bin.index.json)")


def read_shards(index: Path, reader) -> Arrays:
    """The arrays of a sharded checkpoint: every shard its ``weight_map`` names, each read by ``reader``."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{index}: not a shard index ({type(err).__name__}: {err}); expected the JSON with a "
                         f"'weight_map' (tensor name -> shard file) that save_pretrained writes") from err
    arrays = {}
    for shard in shards:
        if not isinstance(shard, str) or Path(shard).name != shard or shard.startswith("."):
            raise ValueError(f"{index}: shard {shard!r} is not a file name beside the index")
        if not (index.parent / shard).is_file():
            raise FileNotFoundError(f"{index}: shard {shard} is missing; download or save the checkpoint again")
        arrays.update(reader(index.parent / shard)[0])
    missing = sorted(set(weight_map) - set(arrays))
    if missing:
        raise ValueError(f"{index}: the shards lack {len(missing)} tensors the index names, e.g. {missing[:3]}")
    return arrays


READERS = {".safetensors": read_safetensors, ".npz": read_npz, ".pth": read_torch, ".pt": read_torch,
           ".bin": read_torch}


def save(path, variables: Mapping, arch: str, **model_kwargs) -> Path:
    """Writes tljax variables to ``.safetensors`` or ``.npz`` with the arch and ``create`` kwargs, for ``load``."""
    from tljax.params import flatten

    path = Path(path)
    flat = {k: np.ascontiguousarray(np.asarray(v)) for k, v in flatten(variables).items()}
    meta = json.dumps({"arch": arch, "kwargs": model_kwargs})  # raises on kwargs JSON cannot hold
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(flat, str(path), metadata={META_KEY: meta})
    elif path.suffix == ".npz":
        np.savez(path, **flat, **{META_KEY: np.array(meta)})
    else:
        raise ValueError(f"save writes .safetensors or .npz, not {path.suffix!r}")
    return path
