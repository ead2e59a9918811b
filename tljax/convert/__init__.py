"""Foreign checkpoints → tljax variables: ``from_torch`` (torchvision, timm, Hugging Face) and ``from_keras_h5``.

The output is ``{'params': …}`` plus ``'batch_stats'`` for models with BatchNorm, keyed exactly
as ``models.create(arch, num_classes=<the checkpoint's head size>)`` (``None`` when it has no
head). Every conversion is checked strictly: a missing, unexpected or mis-shaped key raises a
``WeightMismatchError`` naming it, the checkpoint's own key, and the nearest expected name.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

from tljax.convert import hf, keras, timm, torchvision
from tljax.convert.common import Rule, apply_rules, validate
from tljax.convert.detect import detect_arch, detect_source

SOURCES = ("torchvision", "timm", "hf")


def _family(arch: str) -> str:
    for family in ("resnet", "vgg", "vit", "bert"):
        if arch.startswith(family):
            return family
    raise ValueError(f"no converter for arch {arch!r}")


def rules_for(arch: str, source: str) -> List[Rule]:
    """The key table for ``arch`` saved by ``source``."""
    family = _family(arch)
    tables = {
        ("torchvision", "resnet"): torchvision.RESNET,
        ("torchvision", "vit"): torchvision.VIT,
        ("timm", "resnet"): timm.RESNET,
        ("timm", "vit"): timm.VIT,
        ("hf", "bert"): hf.BERT,
    }
    if (source, family) == ("torchvision", "vgg"):
        return torchvision.vgg(batch_norm=arch.endswith("_bn"))
    if (source, family) not in tables:
        known = sorted({s for s, f in tables if f == family} | ({"torchvision"} if family == "vgg" else set()))
        raise ValueError(f"no {source!r} converter for {arch!r}; sources for it: {known}")
    return tables[source, family]


def convert_torch(state_dict: Mapping[str, Any], arch: str, source: str,
                  **model_kwargs) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``from_torch`` that also returns the ``create`` kwargs the weights need (ViT image size, BERT config)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; use one of {SOURCES}")
    if source == "hf":
        state_dict = hf.strip_prefix(state_dict)
    flat, sources = apply_rules(state_dict, rules_for(arch, source))
    optional = ()
    if arch == "bert":
        model_kwargs = hf.bert_kwargs(flat, **model_kwargs)
        optional = hf.BERT_OPTIONAL
    elif _family(arch) == "vit" and "params/backbone/pos_embed" in flat and "image_size" not in model_kwargs:
        tokens = flat["params/backbone/pos_embed"].shape[1] - 1
        patch = flat["params/backbone/patch_embed/kernel"].shape[0]
        model_kwargs = {**model_kwargs, "image_size": int(round(tokens ** 0.5)) * patch}
    variables = validate(flat, sources, arch, f"{source} {arch} state dict", optional, **model_kwargs)
    return variables, model_kwargs


def from_torch(state_dict: Mapping[str, Any], arch: str, source: str, **model_kwargs) -> Dict[str, Any]:
    """Variables for ``models.create(arch, …)`` from a torch-style state dict (numpy arrays or torch tensors).

    ``source``: ``'torchvision'``, ``'timm'`` or ``'hf'``. ``model_kwargs`` are ``create`` overrides
    the checkpoint needs, e.g. ``config=<config.json dict>`` for BERT or ``pooling='pooler'`` to keep
    Hugging Face's pooler. torch is imported only by the tensors themselves.
    """
    return convert_torch(state_dict, arch, source, **model_kwargs)[0]


def from_keras_h5(path, arch: str = "vgg16", **model_kwargs) -> Dict[str, Any]:
    """Variables for ``models.create(arch, …)`` from Keras ``.h5`` weights (Keras 2/legacy or Keras 3 layout)."""
    if _family(arch) != "vgg" or arch.endswith("_bn"):
        raise ValueError(f"no Keras converter for {arch!r}; Keras weights convert for 'vgg16'")
    flat, sources = keras.convert_layers(keras.read_layers(path))
    return validate(flat, sources, arch, f"Keras {arch} weights {path}", **model_kwargs)


__all__ = ["from_torch", "from_keras_h5", "convert_torch", "detect_arch", "detect_source", "SOURCES"]
