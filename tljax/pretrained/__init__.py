"""Pretrained weights: ``load(name_or_path, num_classes=None) -> (model, variables)``.

``name_or_path`` is a registry name (``resnet50.tv_in1k``, ``vit_b16.tv_in1k``,
``vgg16.keras_in1k``, … see ``REGISTRY``), fetched into ``$TLJAX_CACHE`` and checksummed, or
a local ``.safetensors``, ``.pth``/``.pt``/``.bin``, ``.h5``, ``.npz`` file or Hugging Face
folder (``config.json`` + ``model.safetensors``). The arch and source format are read from the
registry, the file's tljax metadata, or its key names; pass ``arch=``/``source=`` when they
cannot be. No file is ever unpickled beyond tensors.

Hub names (``hub.py``): ``hf-hub:<org>/<name>[@<revision>]``, ``timm/<name>[@<revision>]`` and the
``HUB_REGISTRY`` names (``dinov2_small.hf``, ``convnext_tiny.timm_in22k``, …: pinned revisions) download
through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, ``HF_TOKEN``) and load as
the snapshot folder would; failures raise ``HubError``.

``num_classes=None`` gives the features model (the pretrained head is dropped); an int gives a
fresh head (``head_zero_init`` for zeros) on the pretrained backbone via the strict merge;
``keep_head=True`` keeps the checkpoint's own head (e.g. ImageNet logits).

A folder ``Finetuned.save`` wrote (``tljax_config.json``) loads like any checkpoint
(``keep_head=True`` for its fine-tuned head). ``load_with_preprocess`` also returns the weights'
``Preprocess`` (resize, crop, normalisation: ``preprocess_of``) with the arch and ``create``
kwargs, so predictions apply what the weights were trained with.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from tljax import convert, models
from tljax.convert.common import head_size, validate
from tljax.data.preprocess import Preprocess, from_hf_processor, from_timm_cfg
from tljax.params import flatten, merge_pretrained
from tljax.pretrained.download import ChecksumError, DownloadError, cache_dir, fetch
from tljax.pretrained.files import READERS, UnsafeCheckpointError, read_hf_folder, save
from tljax.pretrained import hub, tljax_format
from tljax.pretrained.hub import HubError
from tljax.pretrained.registry import HUB_REGISTRY, REGISTRY, HubWeights, Weights, register

FORMAT_SOURCES = {"torchvision": "torchvision", "timm": "timm", "hf": "hf"}


def _resolve(name_or_path, progress: bool) -> Tuple[Path, Optional[Weights]]:
    """The local path for a registry or Hub name (downloading it) or an existing file/folder."""
    hub_ref = hub.parse(name_or_path)
    if hub_ref is not None:
        return hub.download(*hub_ref, progress=progress), None
    if str(name_or_path) in REGISTRY:
        weights = REGISTRY[str(name_or_path)]
        return fetch(weights, progress), weights
    path = Path(name_or_path).expanduser()
    if not path.exists():
        near = difflib.get_close_matches(str(name_or_path), [*REGISTRY, *HUB_REGISTRY], n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise FileNotFoundError(f"{str(name_or_path)!r} is neither a registry name nor an existing file or folder."
                                f"{hint} Registry: {sorted(REGISTRY)}; Hub: {sorted(HUB_REGISTRY)}, or "
                                f"hf-hub:<org>/<name>[@<revision>], timm/<name>")
    return path, None


def read_variables(name_or_path, arch: Optional[str] = None, source: Optional[str] = None, progress: bool = True,
                   **model_kwargs) -> Tuple[Dict[str, Any], str, Dict[str, Any]]:
    """``(variables, arch, create kwargs)`` of a checkpoint.

    The variables are strictly checked against ``create(arch, <the checkpoint's head size>, **kwargs)``.
    """
    path, weights = _resolve(name_or_path, progress)
    arch = arch or (weights.arch if weights else None)
    fmt = weights.format if weights else None
    if fmt == "keras_h5" or (fmt is None and path.suffix == ".h5"):
        return convert.from_keras_h5(path, arch or "vgg16", **model_kwargs), arch or "vgg16", model_kwargs
    if path.is_dir() and tljax_format.is_export(path):
        return tljax_format.read(path, **model_kwargs)
    if path.is_dir():
        arrays, meta = read_hf_folder(path)
        arch, model_kwargs, source = _arch_of_folder(path, meta["config"], arrays, arch, source, model_kwargs)
    elif path.suffix in READERS:
        arrays, meta = READERS[path.suffix](path)
    else:
        raise ValueError(f"{path}: unknown checkpoint type {path.suffix!r}; use .safetensors, .pth/.pt/.bin, "
                         f".h5, .npz or a Hugging Face folder")
    arch = arch or meta.get("arch") or convert.detect_arch(arrays)
    model_kwargs = {**meta.get("kwargs", {}), **model_kwargs}
    source = source or FORMAT_SOURCES.get(fmt) or convert.detect_source(arrays)
    if arch is None or source is None:
        raise ValueError(f"{path}: cannot tell the {'arch' if arch is None else 'source format'} from its key "
                         f"names (e.g. {list(arrays)[:3]}); pass arch=… and source=… "
                         f"(one of {convert.SOURCES + ('tljax',)})")
    if source == "tljax":
        flat = {k: jnp.asarray(v) for k, v in arrays.items()}
        variables = validate(flat, {k: k for k in flat}, arch, f"tljax weights {path}", **model_kwargs)
        return variables, arch, model_kwargs
    if arch in ("bert", "roberta", "distilbert") and "config" not in model_kwargs:  # heads are not in the shapes
        raise ValueError(f"{path}: {arch} weights need their config (head count and activation are not in the "
                         f"weights): pass config=<config.json dict>, or load the Hugging Face folder that holds "
                         f"config.json")
    variables, model_kwargs = convert.convert_torch(arrays, arch, source, **model_kwargs)
    return variables, arch, model_kwargs


def _arch_of_folder(path, config, arrays, arch, source, model_kwargs):
    """``(arch, kwargs, source)`` of a Hugging Face / timm folder from its ``config.json``; an ``arch=``
    given by the caller wins, and a timm name tljax does not know falls back to the key names."""
    hub = convert.hub_config
    try:
        found, kwargs, found_source = hub.from_config(config)
    except hub.UnsupportedArchitecture as err:
        found = convert.detect_arch(arrays) if hub.is_timm_config(config) and arch is None else None
        if found is None and arch is None:
            raise hub.UnsupportedArchitecture(f"{path}: {err}") from None
        kwargs, found_source = {}, convert.detect_source(arrays)
    if arch is not None and arch != found:  # the caller's arch wins; the config's sizes were for another
        return arch, model_kwargs, source or found_source
    return found, {**kwargs, **model_kwargs}, source or found_source


class Loaded(NamedTuple):
    """``load_with_preprocess``'s result: ``load``'s pair plus what rebuilding and feeding the model needs."""

    model: nn.Module
    variables: Dict[str, Any]
    preprocess: Optional[Preprocess]  # None: the weights do not say (e.g. text models)
    arch: str
    model_kwargs: Dict[str, Any]  # create kwargs the weights need (BERT config, ViT size, …)


def tokenizer_file(name_or_path) -> str:
    """The ``tokenizer.json`` saved with the weights (a folder, or a Hub name's snapshot, fetching its
    metadata only), or '' when there is none: text models tokenise as they were trained."""
    hub_ref = hub.parse(name_or_path)
    if hub_ref is not None:
        folder = hub.download(*hub_ref, weights=False)
    elif str(name_or_path) in REGISTRY:
        return ""  # URL registry entries are single weight files
    else:
        folder = Path(os.fspath(name_or_path)).expanduser()
    return str(folder / "tokenizer.json") if (folder / "tokenizer.json").is_file() else ""


def preprocess_of(name_or_path) -> Optional[Preprocess]:
    """The ``Preprocess`` the weights expect, without reading or downloading them: the registry
    entry's; a tljax export's ``tljax_config.json``; a folder's timm ``pretrained_cfg`` (in
    ``config.json``) or Hugging Face ``preprocessor_config.json``; else None. A Hub name fetches
    only the snapshot's JSON files."""
    hub_ref = hub.parse(name_or_path)
    if hub_ref is not None:
        name_or_path = hub.download(*hub_ref, weights=False)
    if str(name_or_path) in REGISTRY:
        return REGISTRY[str(name_or_path)].preprocess
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        return None
    if tljax_format.is_export(path):
        return tljax_format.preprocess_of(tljax_format.read_config(path))
    for name, parse, key in (("config.json", from_timm_cfg, "pretrained_cfg"),
                             ("preprocessor_config.json", from_hf_processor, None)):
        file = path / name
        if file.is_file():
            try:
                cfg = json.loads(file.read_text(encoding="utf-8"))
            except ValueError as err:
                raise ValueError(f"{file}: not valid JSON ({err})") from err
            found = cfg.get(key) if key and isinstance(cfg, dict) else cfg
            if isinstance(found, dict) and (key or "image_mean" in found):  # not an audio feature extractor's
                return parse(found)
    return None


def load(name_or_path, num_classes: Optional[int] = None, head_zero_init: bool = False, *,
         arch: Optional[str] = None, source: Optional[str] = None, keep_head: bool = False,
         rng: Optional[jax.Array] = None, progress: bool = True, **model_kwargs) -> Tuple[nn.Module, Dict[str, Any]]:
    """``(model, variables)`` for pretrained weights; see the module docstring. ``model_kwargs`` go to ``create``."""
    return tuple(load_with_preprocess(name_or_path, num_classes, head_zero_init, arch=arch, source=source,
                                      keep_head=keep_head, rng=rng, progress=progress, **model_kwargs)[:2])


def load_with_preprocess(name_or_path, num_classes: Optional[int] = None, head_zero_init: bool = False, *,
                         arch: Optional[str] = None, source: Optional[str] = None, keep_head: bool = False,
                         rng: Optional[jax.Array] = None, progress: bool = True, **model_kwargs) -> Loaded:
    """``load``, as a ``Loaded`` that also holds the weights' ``Preprocess``, arch and create kwargs."""
    hub_ref = hub.parse(name_or_path)
    if hub_ref is not None:  # one snapshot (one commit) gives both the preprocess and the weights
        name_or_path = hub.download(*hub_ref, progress=progress)
    preprocess = preprocess_of(name_or_path)
    variables, arch, model_kwargs = read_variables(name_or_path, arch, source, progress, **model_kwargs)
    export = str(name_or_path) not in REGISTRY and tljax_format.is_export(Path(name_or_path).expanduser())
    example = tljax_format.example_input(tljax_format.read_config(name_or_path)) if export else None
    return Loaded(*_with_head(variables, arch, model_kwargs, num_classes, head_zero_init, keep_head, rng, example),
                  preprocess, arch, model_kwargs)


def _with_head(variables, arch, model_kwargs, num_classes, head_zero_init, keep_head, rng, example=None):
    """The model with the checkpoint's head, none, or a fresh one initialised on ``example`` (default:
    ``models.example_input``; an export knows its own input, e.g. one channel)."""
    pretrained_head = head_size(flatten(variables))
    if keep_head:
        if pretrained_head is None or num_classes not in (None, pretrained_head):
            raise ValueError(f"keep_head=True needs the checkpoint's head ({pretrained_head} classes) "
                             f"and num_classes None or equal to it, got {num_classes}")
        return models.create(arch, pretrained_head, **model_kwargs), jax.tree.map(jnp.asarray, variables)
    model = models.create(arch, num_classes, head_zero_init, **model_kwargs)
    if num_classes is None:
        backbone = {c: {k: v for k, v in tree.items() if k != "head"} for c, tree in variables.items()}
        return model, jax.tree.map(jnp.asarray, backbone)
    example = models.example_input(model) if example is None else example
    init = jax.jit(model.init)(rng if rng is not None else jax.random.PRNGKey(0), example)
    return model, jax.tree.map(jnp.asarray, merge_pretrained(init, variables, dont_load=("head/.*",)))


__all__ = ["load", "tokenizer_file", "load_with_preprocess", "preprocess_of", "Loaded", "Preprocess", "read_variables", "save",
           "register", "Weights", "REGISTRY", "cache_dir", "fetch", "ChecksumError", "DownloadError",
           "UnsafeCheckpointError", "HubWeights", "HUB_REGISTRY", "HubError"]
