"""timm key tables: ResNet (same names as torchvision) and the ViT family → tljax paths.

``VIT`` covers timm's ``VisionTransformer`` as tljax builds it: class and register tokens,
``norm_pre``, LayerScale ``ls1``/``ls2``, ``fc_norm`` and the ``attn_pool`` (MAP) head, whose
fused ``kv`` projection is split into ``key`` and ``value``. ``vit_from_timm_config`` reads a
timm Hub ``config.json`` (``architecture`` + ``model_args`` + ``pretrained_cfg``) into
``create('vit', …)`` kwargs; the sizes the weights fix are read off them (``convert.vit``).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

from tljax.convert import torchvision
from tljax.convert.common import Rule, fused_qkv, linear_kernel, module, param

RESNET: List[Rule] = torchvision.RESNET


def fused_kv(pattern: str, target: str) -> Rule:
    """A fused key/value projection (``pattern``'s last group ``weight``/``bias``) → ``target``'s key, value."""
    rx = re.compile(pattern)

    def rule(key, x):
        m = rx.fullmatch(key)
        if m is None:
            return None
        weight, base = m.group(rx.groups) == "weight", m.expand(target)
        return {f"params/{base}/{name}/{'kernel' if weight else 'bias'}": linear_kernel(p) if weight else p
                for name, p in zip(("key", "value"), np.split(x, 2, axis=0))}

    return rule


_BLOCK = r"blocks\.(\d+)\."
_POOL = r"attn_pool\."
VIT: List[Rule] = [
    param(r"cls_token", "params/backbone/cls_token"),
    param(r"reg_token", "params/backbone/reg_tokens"),
    param(r"pos_embed", "params/backbone/pos_embed"),
    module(r"patch_embed\.proj", "backbone/patch_embed"),
    module(r"norm_pre", "backbone/norm_pre"),
    module(_BLOCK + r"norm1", r"backbone/layer\1/norm1"),
    module(_BLOCK + r"norm2", r"backbone/layer\1/norm2"),
    fused_qkv(_BLOCK + r"attn\.qkv\.(weight|bias)", r"backbone/layer\1/attention"),
    module(_BLOCK + r"attn\.proj", r"backbone/layer\1/attention/out"),
    module(_BLOCK + r"(ls[12])", r"backbone/layer\1/\2"),  # gamma → scale
    module(_BLOCK + r"mlp\.fc1", r"backbone/layer\1/mlp_fc1"),
    module(_BLOCK + r"mlp\.fc2", r"backbone/layer\1/mlp_fc2"),
    module(r"norm", "backbone/norm"),
    module(r"fc_norm", "backbone/fc_norm"),
    param(_POOL + r"latent", "params/backbone/attn_pool/latent"),
    module(_POOL + r"q", "backbone/attn_pool/attention/query"),
    fused_kv(_POOL + r"kv\.(weight|bias)", "backbone/attn_pool/attention"),
    module(_POOL + r"proj", "backbone/attn_pool/attention/out"),
    module(_POOL + r"norm", "backbone/attn_pool/norm"),
    module(_POOL + r"mlp\.fc1", "backbone/attn_pool/mlp_fc1"),
    module(_POOL + r"mlp\.fc2", "backbone/attn_pool/mlp_fc2"),
    module(r"head", "head"),
]

# timm size name -> (width, depth, heads) of timm's factories; only the heads are used (the weights fix the rest).
VIT_SIZES: Dict[str, Tuple[int, int, int]] = {
    "tiny": (192, 12, 3), "xsmall": (256, 10, 4), "small": (384, 12, 6), "medium": (512, 12, 8),
    "betwixt": (640, 12, 10), "base": (768, 12, 12), "large": (1024, 24, 16), "so150m": (896, 18, 14),
    "so400m": (1152, 27, 16), "huge": (1280, 32, 16), "giant": (1408, 40, 16), "gigantic": (1664, 48, 16),
}
# timm's own exceptions to the table (architecture → heads).
VIT_HEADS = {"vit_base_patch16_gap_224": 16, "vit_giant_patch14_dinov2": 24, "vit_giant_patch14_reg4_dinov2": 24}
VIT_PATTERN = r"(?:vit|deit3?)_(" + "|".join(VIT_SIZES) + r")_patch(\d+)(_.*)?"  # deit: ViTs too
# model_args timm accepts that tljax builds the same way, and the tljax field each sets.
_ARGS = {"embed_dim": "hidden_size", "depth": "num_layers", "num_heads": "num_heads", "patch_size": "patch_size",
         "img_size": "image_size", "in_chans": "in_channels", "class_token": "class_token",
         "reg_tokens": "num_registers", "pre_norm": "pre_norm", "final_norm": "final_norm", "qkv_bias": "qkv_bias"}
_NEUTRAL = {"num_classes", "mlp_ratio", "dynamic_img_size", "dynamic_img_pad", "drop_rate", "pos_drop_rate",
            "proj_drop_rate", "attn_drop_rate", "drop_path_rate", "patch_drop_rate", "weight_init", "fix_init"}
_ACTS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_tanh": "gelu_tanh"}


def vit_from_timm_config(m: re.Match, config: Mapping[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """``('vit', kwargs)`` for a timm ``vit_<size>_patch<p>…`` / ``deit…`` Hub config; unsupported model_args
    fail by name (a distilled DeiT's ``dist_token`` fails the strict key check)."""
    from tljax.convert.hub_config import UnsupportedArchitecture  # noqa: PLC0415 (hub_config imports this module)

    name, args = m[0], dict(config.get("model_args") or {})
    kwargs: Dict[str, Any] = {"num_heads": VIT_HEADS.get(name, VIT_SIZES[m[1]][2]),  # width, depth: the weights'
                              "layer_norm_eps": 1e-5 if "clip" in name else 1e-6,
                              "activation": "quick_gelu" if "quickgelu" in name else "gelu"}
    size = re.search(r"_(\d+)$", name)
    input_size = (config.get("pretrained_cfg") or {}).get("input_size")
    if input_size:
        kwargs["image_size"] = [int(s) for s in input_size[1:]]
    elif size:
        kwargs["image_size"] = int(size[1])
    pool = args.pop("global_pool", config.get("global_pool"))
    if pool is not None:
        if pool not in ("token", "avg", "map", ""):
            raise UnsupportedArchitecture(f"timm {name}: global_pool={pool!r}; tljax builds token, avg, map or ''")
        kwargs["pooling"] = pool or None
    elif "gap" in name:
        kwargs["pooling"] = "avg"
    for key, value in args.items():
        if key in _ARGS:
            kwargs[_ARGS[key]] = list(value) if isinstance(value, (list, tuple)) else value
        elif key == "no_embed_class":
            kwargs["pos_embed_prefix"] = not value
        elif key == "fc_norm" and value is not None:
            kwargs["fc_norm"] = bool(value)
        elif key == "init_values":
            kwargs["layer_scale"] = bool(value)
        elif key == "act_layer" and value in _ACTS:
            kwargs["activation"] = _ACTS[value]
        elif key not in _NEUTRAL and value not in (None, False, 0, ""):
            raise UnsupportedArchitecture(f"timm {name}: model_args {key}={value!r} is not something tljax's ViT "
                                          f"builds; it builds {sorted(_ARGS)} and no_embed_class, fc_norm, "
                                          f"init_values, act_layer in {sorted(_ACTS)}")
    if isinstance(kwargs.get("image_size"), list) and len(set(kwargs["image_size"])) == 1:
        kwargs["image_size"] = kwargs["image_size"][0]
    return "vit", kwargs
