"""A checkpoint's ``config.json`` → the tljax arch and ``create`` kwargs that rebuild it.

Two layouts: a Hugging Face transformers config names its ``model_type`` (``bert``,
``dinov2``, …); a timm Hub config (what ``save_for_hf`` writes) names its ``architecture``
(``resnet50``, ``vit_small_patch16_224``, …) beside its ``pretrained_cfg``. Each family adds
its reader to ``HF_MODEL_TYPES`` or ``TIMM_ARCHITECTURES``; anything else gets one error naming
what the checkpoint is and what tljax builds.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Mapping, Tuple

from tljax.convert import convnext as _convnext, efficientnet as _efficientnet
from tljax.convert import timm as _timm, vit_hf as _vit_hf

ArchKwargs = Tuple[str, Dict[str, Any]]

# Hugging Face model_type -> function(config dict) -> (arch, create kwargs).
HF_MODEL_TYPES: Dict[str, Callable[[Mapping[str, Any]], ArchKwargs]] = {
    "bert": lambda config: ("bert", {"config": dict(config)}),
    "convnext": _convnext.from_hf_config,
    **{t: lambda config: ("roberta", {"config": dict(config)}) for t in ("roberta", "xlm-roberta", "camembert")},
    "distilbert": lambda config: ("distilbert", {"config": dict(config)}),
    **_vit_hf.MODEL_TYPES,  # dinov2(_with_registers), clip(_vision_model), siglip(_vision_model)
}
# (regex over timm's architecture name, function(match, config dict) -> (arch, create kwargs)).
TIMM_ARCHITECTURES: List[Tuple[str, Callable[[re.Match, Mapping[str, Any]], ArchKwargs]]] = [
    (r"resnet(18|34|50|101|152)", lambda m, config: (f"resnet{m[1]}", {})),
    (r"convnext_(atto|femto|pico|nano|tiny|small|base|large)", _convnext.from_timm_config),
    (r"efficientnet_b([0-3])", _efficientnet.from_timm_config),
    (_timm.VIT_PATTERN, _timm.vit_from_timm_config),  # vit_<size>_patch<p>…: any depth, width, image size
]


class UnsupportedArchitecture(ValueError):
    """The checkpoint is for a model tljax does not build."""


def is_timm_config(config: Mapping[str, Any]) -> bool:
    """timm's Hub layout: ``architecture`` (and ``pretrained_cfg``), no ``model_type``."""
    return "model_type" not in config and "architecture" in config


def from_hf_config(config: Mapping[str, Any]) -> ArchKwargs:
    """``(arch, kwargs)`` for a transformers ``config.json``."""
    model_type = config.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise UnsupportedArchitecture(
            f"checkpoint model_type {model_type!r} (architectures {config.get('architectures')}) is not one tljax "
            f"builds; supported Hugging Face model types: {sorted(HF_MODEL_TYPES)}")
    return HF_MODEL_TYPES[model_type](config)


def from_timm_config(config: Mapping[str, Any]) -> ArchKwargs:
    """``(arch, kwargs)`` for a timm Hub ``config.json`` (``architecture``, ``pretrained_cfg``, ``model_args``)."""
    name = str(config.get("architecture", ""))
    for pattern, read in TIMM_ARCHITECTURES:
        m = re.fullmatch(pattern, name)
        if m:
            return read(m, config)
    raise UnsupportedArchitecture(
        f"timm architecture {name!r} is not one tljax builds; supported timm architectures (regexes): "
        f"{[p for p, _ in TIMM_ARCHITECTURES]}")


def from_config(config: Mapping[str, Any]) -> Tuple[str, Dict[str, Any], str]:
    """``(arch, kwargs, source)`` for either layout; source is ``'timm'`` or ``'hf'``."""
    if is_timm_config(config):
        return (*from_timm_config(config), "timm")
    return (*from_hf_config(config), "hf")
