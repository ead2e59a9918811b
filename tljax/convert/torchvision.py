"""torchvision key tables: ResNet, VGG-16 (± BN), ViT-B/16 → tljax paths."""

from __future__ import annotations

from typing import List

import numpy as np

from tljax.convert.common import Rule, fused_qkv, module, param
from tljax.models.vgg import VGG16_STAGES

RESNET: List[Rule] = [
    module(r"conv1", "backbone/conv1"),
    module(r"bn1", "backbone/bn1"),
    module(r"layer(\d+)\.(\d+)\.downsample\.0", r"backbone/layer\1/block\2/downsample_conv"),
    module(r"layer(\d+)\.(\d+)\.downsample\.1", r"backbone/layer\1/block\2/downsample_bn"),
    module(r"layer(\d+)\.(\d+)\.(\w+)", r"backbone/layer\1/block\2/\3"),
    module(r"fc", "head"),
]


def nchw_flatten_kernel(w: np.ndarray, pool: int = 7) -> np.ndarray:
    """``fc6`` after torch's NCHW flatten → the same layer after tljax's NHWC flatten: (C·7·7, out) rows reordered."""
    out, fan_in = w.shape
    channels = fan_in // (pool * pool)
    return w.reshape(out, channels, pool, pool).transpose(2, 3, 1, 0).reshape(fan_in, out)


def vgg(batch_norm: bool) -> List[Rule]:
    """``features.N`` indices follow the layer list: conv, [bn], relu per conv, a max-pool per stage."""
    rules, i = [], 0
    for b, widths in enumerate(VGG16_STAGES, 1):
        for j in range(1, len(widths) + 1):
            rules.append(module(rf"features\.{i}", f"backbone/conv{b}_{j}"))
            if batch_norm:
                rules.append(module(rf"features\.{i + 1}", f"backbone/bn{b}_{j}"))
            i += 3 if batch_norm else 2
        i += 1
    return rules + [
        param(r"classifier\.0\.weight", "params/backbone/fc6/kernel", nchw_flatten_kernel),
        module(r"classifier\.0", "backbone/fc6"),
        module(r"classifier\.3", "backbone/fc7"),
        module(r"classifier\.6", "head"),
    ]


_LAYER = r"encoder\.layers\.encoder_layer_(\d+)\."
VIT: List[Rule] = [
    param(r"class_token", "params/backbone/cls_token"),
    param(r"encoder\.pos_embedding", "params/backbone/pos_embed"),
    module(r"conv_proj", "backbone/patch_embed"),
    module(_LAYER + r"ln_1", r"backbone/layer\1/norm1"),
    module(_LAYER + r"ln_2", r"backbone/layer\1/norm2"),
    fused_qkv(_LAYER + r"self_attention\.in_proj_(weight|bias)", r"backbone/layer\1/attention"),
    module(_LAYER + r"self_attention\.out_proj", r"backbone/layer\1/attention/out"),
    module(_LAYER + r"mlp\.(?:0|linear_1)", r"backbone/layer\1/mlp_fc1"),
    module(_LAYER + r"mlp\.(?:3|linear_2)", r"backbone/layer\1/mlp_fc2"),
    module(r"encoder\.ln", "backbone/norm"),
    module(r"heads\.head", "head"),
]

