"""Guesses a checkpoint's source format and arch from its key names and shapes."""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import numpy as np

from tljax.convert import convnext, efficientnet
from tljax.models.resnet import RESNETS, Bottleneck


def detect_source(keys) -> Optional[str]:
    """``'tljax'`` (native paths), ``'torchvision'``, ``'timm'``, ``'hf'``, or None when unsure."""
    keys = set(keys)
    if any(k.startswith(("params/", "batch_stats/")) for k in keys):
        return "tljax"
    if any(k.endswith("embeddings.word_embeddings.weight") for k in keys):
        return "hf"
    if "patch_embed.proj.weight" in keys:
        return "timm"
    if convnext.is_timm(keys) or "conv_stem.weight" in keys:  # ConvNeXt, EfficientNet
        return "timm"
    if convnext.is_hf(keys):
        return "hf"
    if {"conv_proj.weight", "features.0.weight", "conv1.weight"} & keys:
        return "torchvision"  # timm's ResNets use the same names, so this table serves both
    return None


def detect_arch(arrays: Mapping[str, Any]) -> Optional[str]:
    """The arch a torch-style state dict is for, or None when the names do not say."""
    keys = set(arrays)
    if convnext.is_timm(keys) or convnext.is_hf(keys):
        return "convnext"  # sizes: read off the weights (convert.KWARGS)
    if "conv_stem.weight" in keys:
        return efficientnet.detect(arrays)
    if any(k.endswith("transformer.layer.0.attention.q_lin.weight") for k in keys):
        return "distilbert"
    if any(k.endswith("embeddings.word_embeddings.weight") for k in keys):
        return "bert"  # RoBERTa's keys are BERT's: its config.json (model_type) tells them apart
    if "conv_proj.weight" in keys or "patch_embed.proj.weight" in keys:
        width = np.shape(arrays.get("conv_proj.weight", arrays.get("patch_embed.proj.weight")))
        return "vit_b16" if tuple(width[:1]) + tuple(width[2:]) == (768, 16, 16) else None
    if "features.0.weight" in keys:
        convs = [k for k in keys if re.fullmatch(r"features\.\d+\.weight", k) and np.ndim(arrays[k]) == 4]
        bn = any(k.startswith("features.") and k.endswith("running_mean") for k in keys)
        return ("vgg16_bn" if bn else "vgg16") if len(convs) == 13 else None
    blocks = {}
    for k in keys:
        m = re.match(r"layer(\d+)\.(\d+)\.", k)
        if m:
            blocks[int(m[1])] = max(blocks.get(int(m[1]), 0), int(m[2]) + 1)
    sizes = tuple(blocks[i] for i in sorted(blocks))
    bottleneck = any(re.match(r"layer\d+\.\d+\.conv3\.", k) for k in keys)
    stem = np.shape(arrays["conv1.weight"])[-1] if np.ndim(arrays.get("conv1.weight")) == 4 else None
    for name, spec in RESNETS.items():
        same_stem = stem == (7 if spec.get("stem", "imagenet") == "imagenet" else 3)
        if tuple(spec["stage_sizes"]) == sizes and (spec["block_cls"] is Bottleneck) == bottleneck and same_stem:
            return name
    return None
