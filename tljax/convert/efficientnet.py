"""EfficientNet key table (timm ``efficientnet_b0`` … ``b3``), arch detection and the timm config reader.

BatchNorm running statistics go to ``batch_stats``; timm's final ``bn2`` becomes ``bn_head`` (a
top-level ``bn2`` would read as block 2 to the depth-group layout).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from tljax.convert.common import Rule, module
from tljax.models.efficientnet import EFFICIENTNETS, round_channels, stage_depths

_B = r"blocks\.(\d+)\.(\d+)\."
TIMM: List[Rule] = [
    module(r"conv_stem", "backbone/conv_stem"),
    module(r"bn1", "backbone/bn1"),
    module(_B + r"(conv_pw|conv_dw|conv_pwl|bn1|bn2|bn3)", r"backbone/layer\1/block\2/\3"),
    module(_B + r"se\.(conv_reduce|conv_expand)", r"backbone/layer\1/block\2/se/\3"),
    module(r"conv_head", "backbone/conv_head"),
    module(r"bn2", "backbone/bn_head"),
    module(r"classifier", "head"),
]

_LEAVES = r"\.(weight|bias|running_mean|running_var|num_batches_tracked)"
TIMM_KEYS = re.compile(r"(conv_stem|bn1|conv_head|bn2|classifier|blocks\.\d+\.\d+\.(conv_pw|conv_dw|conv_pwl|bn[123]"
                       r"|se\.conv_reduce|se\.conv_expand))" + _LEAVES)


def detect(arrays: Mapping[str, Any]) -> Optional[str]:
    """``efficientnet_bN`` whose stage depths and widths the timm state dict has, else None."""
    keys = list(arrays)
    if "conv_stem.weight" not in arrays or not all(TIMM_KEYS.fullmatch(k) for k in keys):
        return None
    depths: Dict[int, int] = {}
    for k in keys:
        m = re.match(r"blocks\.(\d+)\.(\d+)\.", k)
        if m:
            depths[int(m[1])] = max(depths.get(int(m[1]), 0), int(m[2]) + 1)
    found = [depths[s] for s in sorted(depths)]
    head = np.shape(arrays.get("conv_head.weight", ()))[:1]
    for name, spec in EFFICIENTNETS.items():
        if found == stage_depths(spec["depth_mult"]) and head == (round_channels(1280, spec["width_mult"]),):
            return name
    return None


TIMM_IGNORED = ("num_classes", "in_chans", "drop_rate", "drop_path_rate", "pretrained_cfg", "pretrained_cfg_overlay")


def from_timm_config(match: re.Match, config: Mapping[str, Any]):
    """``('efficientnet_bN', {})`` for a timm Hub config; ``model_args`` that change the net raise a
    ``ValueError`` (not ``UnsupportedArchitecture``: the keys would pass for the plain net, the numbers not)."""
    for key, value in (config.get("model_args") or {}).items():
        if key not in TIMM_IGNORED and not (key == "global_pool" and value == "avg"):
            raise ValueError(
                f"timm {config.get('architecture')!r} with model_args {key}={value!r}: tljax builds timm's "
                f"efficientnet_b0…b3 as defined (model_args {list(TIMM_IGNORED)}, global_pool='avg' only)")
    return f"efficientnet_b{match[1]}", {}
