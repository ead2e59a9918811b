"""The folder ``Finetuned.save`` writes, as weights ``tljax.pretrained.load`` reads.

``model.safetensors`` holds the merged variables (LoRA folded in) with the arch and ``create``
kwargs in its metadata (``files.save``); ``tljax_config.json`` holds what a model needs beyond
its arrays: ``format`` (``tljax.finetuned``), ``format_version``, ``tljax_version``, ``arch``,
``model`` (the ``create`` kwargs), ``num_classes``, ``label_names``, ``preprocess`` (a
``Preprocess`` dict for image models, else null), ``text`` (``{"max_len": …}`` for text models,
whose ``tokenizer.json`` lies beside) and ``inference`` (the exported StableHLO file and its
inputs). A folder without ``tljax_config.json``, or whose file is not this format, is refused
by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import numpy as np

from tljax import models
from tljax.convert.common import head_size
from tljax.data.preprocess import Preprocess
from tljax.params import check_compatible, flatten, unflatten
from tljax.pretrained.files import read_safetensors, save

CONFIG = "tljax_config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
FORMAT = "tljax.finetuned"
VERSION = 1
REQUIRED = ("arch", "model", "num_classes", "label_names", "preprocess", "text")
FILES = f"{WEIGHTS}, {CONFIG} and inference.stablehlo (tokenizer.json for text models)"


def is_export(path) -> bool:
    """Whether ``path`` is a folder holding ``tljax_config.json`` (checked further by ``read_config``)."""
    return (Path(path) / CONFIG).is_file()


def tljax_version() -> str:
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version("tljax")
    except metadata.PackageNotFoundError:
        return "unknown"


def read_config(path) -> Dict[str, Any]:
    """``tljax_config.json`` of an export folder, checked; errors say what the folder should hold."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{str(path)!r} is not a folder; expected a tljax export folder ({FILES})")
    if not is_export(path):
        raise ValueError(f"{path} is not a tljax export: it has no {CONFIG}; expected the folder "
                         f"Finetuned.save writes ({FILES}). Found: {sorted(p.name for p in path.iterdir())[:8]}")
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path / CONFIG}: not valid JSON ({err}); save the model again") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{path / CONFIG}: format {found!r} is not a tljax export ({FORMAT!r})")
    if int(config.get("format_version", 0)) > VERSION:
        raise ValueError(f"{path / CONFIG}: format_version {config['format_version']} was written by a newer tljax "
                         f"({config.get('tljax_version')}); this one reads up to {VERSION}")
    missing = [k for k in REQUIRED if k not in config]
    if missing or not (path / WEIGHTS).is_file():
        raise ValueError(f"{path}: an incomplete tljax export, missing {missing or [WEIGHTS]}; save the model again")
    config["model"] = model_kwargs(config["model"])
    return config


def model_kwargs(kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    """``create`` kwargs read back from JSON: top-level lists become tuples again (``widths=(…)``)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def preprocess_of(config: Mapping[str, Any]) -> Optional[Preprocess]:
    return Preprocess.from_dict(config["preprocess"]) if config.get("preprocess") else None


def example_input(config: Mapping[str, Any]) -> np.ndarray:
    """A zero input of the shape the exported model reads (its channels and size, or token ids)."""
    pre = preprocess_of(config)
    if pre is None:
        return np.zeros((1, min(8, int(config["text"]["max_len"]))), np.int32)
    return np.zeros((1, *pre.size_hw, pre.channels), np.float32)


def read(path, **model_kwargs) -> Tuple[Dict[str, Any], str, Dict[str, Any]]:
    """``(variables, arch, create kwargs)`` of an export folder, strictly checked against the model
    built for its own input shape (a 1-channel model has 1-channel kernels)."""
    config = read_config(path)
    arrays, _ = read_safetensors(Path(path) / WEIGHTS)
    arch, kwargs = config["arch"], {**config["model"], **model_kwargs}
    model = models.create(arch, head_size(arrays), **kwargs)
    expected = flatten(jax.eval_shape(model.init, jax.random.PRNGKey(0), example_input(config)))
    check_compatible(expected, arrays, f"tljax export {path}", {k: k for k in arrays})
    return unflatten({k: arrays[k] for k in expected}), arch, kwargs


def write(path, variables: Mapping, arch: str, model: Mapping[str, Any], num_classes: int, label_names,
          preprocess: Optional[Preprocess], text: Optional[Mapping[str, Any]], **extra) -> Path:
    """Writes ``model.safetensors`` and ``tljax_config.json`` into the folder ``path``; ``extra``
    fields (e.g. ``inference``) go into the JSON as given."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save(path / WEIGHTS, variables, arch, **model)
    config = {"format": FORMAT, "format_version": VERSION, "tljax_version": tljax_version(), "arch": arch,
              "model": dict(model), "num_classes": int(num_classes), "label_names": list(label_names),
              "preprocess": preprocess.to_dict() if preprocess else None, "text": dict(text) if text else None,
              **extra}
    tmp = path / f".{CONFIG}.tmp"
    tmp.write_text(json.dumps(config, indent=1), encoding="utf-8")
    tmp.replace(path / CONFIG)
    return path
