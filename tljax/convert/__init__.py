"""Foreign checkpoints → tljax variables: ``from_torch`` (torchvision, timm, Hugging Face) and ``from_keras_h5``.

The output is ``{'params': …}`` plus ``'batch_stats'`` for models with BatchNorm, keyed exactly
as ``models.create(arch, num_classes=<the checkpoint's head size>)`` (``None`` when it has no
head). Every conversion is checked strictly: a missing, unexpected or mis-shaped key raises a
``WeightMismatchError`` naming it, the checkpoint's own key, and the nearest expected name.

Each architecture family registers its pieces in the tables below: ``RULES`` (the key table for
a source), ``PREFIXES`` (wrappers a task model puts around the base model's keys),
``OPTIONAL`` (source keys dropped when the model has no place for them) and ``KWARGS`` (create
kwargs read off the converted arrays). ``hub_config`` maps a ``config.json`` to the arch.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple, Union

from tljax.convert import hf, keras, timm, torchvision
from tljax.convert import convnext, efficientnet
from tljax.convert import vit_hf
from tljax.convert.vit import OPTIONAL as VIT_OPTIONAL, vit_kwargs
from tljax.convert.common import Rule, apply_rules, validate
from tljax.convert.detect import detect_arch, detect_source
from tljax.convert.hub_config import from_hf_config, from_timm_config

SOURCES = ("torchvision", "timm", "hf")

# arch prefix -> family, longest prefix first when looked up.
FAMILIES: Dict[str, str] = {"resnet": "resnet", "vgg": "vgg", "vit": "vit", "bert": "bert",
                            "roberta": "roberta", "distilbert": "distilbert"}
# (source, family) -> rules, or a function of the arch returning them.
RULES: Dict[Tuple[str, str], Union[List[Rule], Callable[[str], List[Rule]]]] = {
    ("torchvision", "resnet"): torchvision.RESNET,
    ("torchvision", "vit"): torchvision.VIT,
    ("torchvision", "vgg"): lambda arch: torchvision.vgg(batch_norm=arch.endswith("_bn")),
    ("timm", "resnet"): timm.RESNET,
    ("timm", "vit"): timm.VIT,
    ("hf", "vit"): vit_hf.rules,  # vit_dinov2, vit_clip, vit_siglip
    ("hf", "bert"): hf.BERT,
    ("hf", "roberta"): hf.ROBERTA,
    ("hf", "distilbert"): hf.DISTILBERT,
}
# source -> key prefixes stripped first (task models keep the base model under its name).
PREFIXES: Dict[str, Sequence[str]] = {"hf": ("bert.", "roberta.", "distilbert.")}
# family -> source-key regexes dropped when the model has no place for them.
OPTIONAL: Dict[str, Sequence[str]] = {"bert": hf.BERT_OPTIONAL, "roberta": hf.ROBERTA_OPTIONAL,
                                     "distilbert": hf.DISTILBERT_OPTIONAL}


# family -> function(flat converted arrays, **given kwargs) -> the create kwargs.
KWARGS: Dict[str, Callable[..., Dict[str, Any]]] = {"bert": hf.bert_kwargs, "vit": vit_kwargs,
                                                   "roberta": hf.roberta_kwargs, "distilbert": hf.distilbert_kwargs}

# ConvNeXt (timm, Hugging Face) and EfficientNet (timm).
FAMILIES.update({"convnext": "convnext", "efficientnet": "efficientnet"})
RULES.update({("timm", "convnext"): convnext.TIMM, ("hf", "convnext"): convnext.HF,
              ("timm", "efficientnet"): efficientnet.TIMM})
PREFIXES["hf"] = (*PREFIXES["hf"], "convnext.")
OPTIONAL["convnext"] = convnext.OPTIONAL
KWARGS["convnext"] = convnext.kwargs_from_weights

# The ViT family (tljax.convert.vit reads its sizes off the weights); a full CLIP/SigLIP keeps its tower
# under vision_model.
PREFIXES["hf"] = (*PREFIXES["hf"], "vision_model.")
OPTIONAL["vit"] = VIT_OPTIONAL


def family(arch: str) -> str:
    """The family an arch belongs to (``resnet50`` → ``resnet``), by its longest known prefix."""
    for prefix in sorted(FAMILIES, key=len, reverse=True):
        if arch.startswith(prefix):
            return FAMILIES[prefix]
    raise ValueError(f"no converter for arch {arch!r}; families with converters: {sorted(set(FAMILIES.values()))}")


def rules_for(arch: str, source: str) -> List[Rule]:
    """The key table for ``arch`` saved by ``source``."""
    fam = family(arch)
    if (source, fam) not in RULES:
        known = sorted(s for s, f in RULES if f == fam)
        raise ValueError(f"no {source!r} converter for {arch!r}; sources for it: {known}")
    rules = RULES[source, fam]
    return rules(arch) if callable(rules) else list(rules)


def strip_prefixes(arrays: Mapping[str, Any], prefixes: Sequence[str]) -> Dict[str, Any]:
    """Keys without the first of ``prefixes`` they start with."""
    out = {}
    for key, value in arrays.items():
        prefix = next((p for p in prefixes if key.startswith(p)), "")
        out[key[len(prefix):]] = value
    return out


def convert_torch(state_dict: Mapping[str, Any], arch: str, source: str,
                  **model_kwargs) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``from_torch`` that also returns the ``create`` kwargs the weights need (ViT image size, BERT config)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; use one of {SOURCES}")
    state_dict = strip_prefixes(state_dict, PREFIXES.get(source, ()))
    flat, sources = apply_rules(state_dict, rules_for(arch, source))
    fam = family(arch)
    if fam in KWARGS:
        model_kwargs = KWARGS[fam](flat, **model_kwargs)
    variables = validate(flat, sources, arch, f"{source} {arch} state dict", OPTIONAL.get(fam, ()), **model_kwargs)
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
    if family(arch) != "vgg" or arch.endswith("_bn"):
        raise ValueError(f"no Keras converter for {arch!r}; Keras weights convert for 'vgg16'")
    flat, sources = keras.convert_layers(keras.read_layers(path))
    return validate(flat, sources, arch, f"Keras {arch} weights {path}", **model_kwargs)


__all__ = ["from_torch", "from_keras_h5", "convert_torch", "detect_arch", "detect_source", "from_hf_config",
           "from_timm_config", "family", "rules_for", "SOURCES", "FAMILIES", "RULES", "PREFIXES", "OPTIONAL",
           "KWARGS"]
