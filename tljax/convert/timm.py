"""timm key tables: ResNet (same names as torchvision) and ViT-B/16 → tljax paths."""

from __future__ import annotations

from typing import List

from tljax.convert import torchvision
from tljax.convert.common import Rule, fused_qkv, module, param

RESNET: List[Rule] = torchvision.RESNET

_BLOCK = r"blocks\.(\d+)\."
VIT: List[Rule] = [
    param(r"cls_token", "params/backbone/cls_token"),
    param(r"pos_embed", "params/backbone/pos_embed"),
    module(r"patch_embed\.proj", "backbone/patch_embed"),
    module(_BLOCK + r"norm1", r"backbone/layer\1/norm1"),
    module(_BLOCK + r"norm2", r"backbone/layer\1/norm2"),
    fused_qkv(_BLOCK + r"attn\.qkv\.(weight|bias)", r"backbone/layer\1/attention"),
    module(_BLOCK + r"attn\.proj", r"backbone/layer\1/attention/out"),
    module(_BLOCK + r"mlp\.fc1", r"backbone/layer\1/mlp_fc1"),
    module(_BLOCK + r"mlp\.fc2", r"backbone/layer\1/mlp_fc2"),
    module(r"norm", "backbone/norm"),
    module(r"head", "head"),
]
