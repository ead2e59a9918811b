"""ConvNeXt key tables (timm ``convnext_*``, Hugging Face ``ConvNextModel`` / ``…ForImageClassification``),
the sizes read off converted weights, and the ``config.json`` readers ``hub_config`` registers.

timm's ``conv_mlp`` variants (atto … nano) keep the MLP as 1×1 convolutions (4-D weights); they
become the same ``Dense`` kernels as the ``nn.Linear`` ones.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping

import numpy as np

from tljax.convert.common import Rule, linear_kernel, module, param

_T = r"stages\.(\d+)\.blocks\.(\d+)\."
_H = r"encoder\.stages\.(\d+)\.layers\.(\d+)\."
_BLOCK = r"params/backbone/layer\1/block\2/"


def dense(pattern: str, target: str) -> List[Rule]:
    """A ``Linear`` or 1×1 ``Conv2d`` (``pattern``) → a ``Dense`` at ``target`` (``backbone/…``)."""
    flat_kernel = lambda w: linear_kernel(w.reshape(w.shape[0], -1))  # noqa: E731
    return [param(pattern + r"\.weight", f"params/{target}/kernel", flat_kernel),
            param(pattern + r"\.bias", f"params/{target}/bias")]


TIMM: List[Rule] = [
    module(r"stem\.0", "backbone/stem_conv"),
    module(r"stem\.1", "backbone/stem_norm"),
    module(r"stages\.(\d+)\.downsample\.0", r"backbone/layer\1/downsample_norm"),
    module(r"stages\.(\d+)\.downsample\.1", r"backbone/layer\1/downsample_conv"),
    param(_T + r"gamma", _BLOCK + "gamma"),
    module(_T + r"conv_dw", r"backbone/layer\1/block\2/conv_dw"),
    module(_T + r"norm", r"backbone/layer\1/block\2/norm"),
    *dense(_T + r"mlp\.fc1", r"backbone/layer\1/block\2/mlp_fc1"),
    *dense(_T + r"mlp\.fc2", r"backbone/layer\1/block\2/mlp_fc2"),
    module(r"head\.norm", "backbone/norm"),
    module(r"head\.fc", "head"),
]

HF: List[Rule] = [
    module(r"embeddings\.patch_embeddings", "backbone/stem_conv"),
    module(r"embeddings\.layernorm", "backbone/stem_norm"),
    module(r"encoder\.stages\.(\d+)\.downsampling_layer\.0", r"backbone/layer\1/downsample_norm"),
    module(r"encoder\.stages\.(\d+)\.downsampling_layer\.1", r"backbone/layer\1/downsample_conv"),
    param(_H + r"layer_scale_parameter", _BLOCK + "gamma"),
    module(_H + r"dwconv", r"backbone/layer\1/block\2/conv_dw"),
    module(_H + r"layernorm", r"backbone/layer\1/block\2/norm"),
    *dense(_H + r"pwconv1", r"backbone/layer\1/block\2/mlp_fc1"),
    *dense(_H + r"pwconv2", r"backbone/layer\1/block\2/mlp_fc2"),
    module(r"layernorm", "backbone/norm"),  # the pooler's norm
    module(r"classifier", "head"),
]
# The final norm has no place in a model built with output='last_hidden_state'.
OPTIONAL = (r"layernorm\..*", r"head\.norm\..*")

# Every key of a checkpoint these tables convert whole (detection must not claim ConvNeXt-V2, GRN, …).
TIMM_KEYS = re.compile(r"(stem\.[01]|stages\.\d+\.(downsample\.[01]|blocks\.\d+\.(conv_dw|norm|mlp\.fc[12]))"
                       r"|head\.(norm|fc))\.(weight|bias)|stages\.\d+\.blocks\.\d+\.gamma")
HF_KEYS = re.compile(r"(convnext\.)?((embeddings\.(patch_embeddings|layernorm)|encoder\.stages\.\d+\."
                     r"(downsampling_layer\.[01]|layers\.\d+\.(dwconv|layernorm|pwconv[12]))|layernorm)"
                     r"\.(weight|bias)|encoder\.stages\.\d+\.layers\.\d+\.layer_scale_parameter)"
                     r"|classifier\.(weight|bias)")


def is_timm(keys) -> bool:
    keys = list(keys)
    return "stem.0.weight" in keys and all(TIMM_KEYS.fullmatch(k) for k in keys)


def is_hf(keys) -> bool:
    keys = list(keys)
    return (any(k.endswith("embeddings.patch_embeddings.weight") for k in keys)
            and all(HF_KEYS.fullmatch(k) for k in keys))


def kwargs_from_weights(flat: Mapping[str, np.ndarray], **given) -> Dict[str, Any]:
    """``create`` kwargs the converted arrays fix (depths, dims, LayerScale, patch and kernel size); ``given`` wins."""
    blocks: Dict[int, int] = {}
    for key in flat:
        m = re.match(r"params/backbone/layer(\d+)/block(\d+)/", key)
        if m:
            blocks[int(m[1])] = max(blocks.get(int(m[1]), 0), int(m[2]) + 1)
    stages = sorted(blocks)
    if stages != list(range(len(stages))) or "params/backbone/stem_conv/kernel" not in flat:
        return given  # the strict check names what is missing
    kernel = lambda s: np.shape(flat.get(f"params/backbone/layer{s}/block0/conv_dw/kernel", (0,)))  # noqa: E731
    found: Dict[str, Any] = {"depths": [blocks[s] for s in stages], "dims": [int(kernel(s)[-1]) for s in stages]}
    if "params/backbone/layer0/block0/gamma" not in flat:
        found["layer_scale"] = False
    patch, size = int(np.shape(flat["params/backbone/stem_conv/kernel"])[0]), int(kernel(0)[0])
    found.update({k: v for k, v, default in (("patch_size", patch, 4), ("kernel_size", size, 7)) if v != default})
    return {**found, **given}


def from_hf_config(config: Mapping[str, Any]):
    """``('convnext', kwargs)`` for a transformers ``ConvNextConfig``; the head size comes from the weights."""
    from tljax.convert.hub_config import UnsupportedArchitecture  # noqa: PLC0415 (hub_config imports this module)

    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise UnsupportedArchitecture(f"ConvNeXt config hidden_act {act!r}: tljax builds ConvNeXt with 'gelu' only")
    kwargs: Dict[str, Any] = {"head_norm_eps": float(config.get("layer_norm_eps", 1e-12))}
    if "depths" in config:
        kwargs["depths"] = [int(d) for d in config["depths"]]
    if "hidden_sizes" in config:
        kwargs["dims"] = [int(d) for d in config["hidden_sizes"]]
    if float(config.get("layer_scale_init_value", 1e-6)) <= 0:
        kwargs["layer_scale"] = False
    if int(config.get("patch_size", 4)) != 4:
        kwargs["patch_size"] = int(config["patch_size"])
    return "convnext", kwargs


# timm model_args: those that only size the head or the input are ignored; the others map to fields.
TIMM_IGNORED = ("num_classes", "in_chans", "drop_rate", "drop_path_rate", "pretrained_cfg", "pretrained_cfg_overlay")
TIMM_FIELDS = {"depths": "depths", "dims": "dims", "patch_size": "patch_size", "norm_eps": "norm_eps"}


def from_timm_config(match: re.Match, config: Mapping[str, Any]):
    """``('convnext_<size>', kwargs)`` for a timm Hub config; ``model_args`` tljax cannot build raise a
    ``ValueError`` (not ``UnsupportedArchitecture``: the keys would pass for the plain net, the numbers not)."""
    args = dict(config.get("model_args") or {})
    kwargs: Dict[str, Any] = {}
    for key, value in args.items():
        if key in TIMM_IGNORED or (key == "global_pool" and value == "avg") or (key == "conv_mlp"):
            continue
        if key == "ls_init_value":
            kwargs.update({} if value else {"layer_scale": False})
        elif key in TIMM_FIELDS:
            kwargs[TIMM_FIELDS[key]] = list(value) if isinstance(value, (list, tuple)) else value
        else:
            raise ValueError(
                f"timm {config.get('architecture')!r} with model_args {key}={value!r}: tljax's ConvNeXt builds "
                f"{sorted(TIMM_FIELDS)} (and ls_init_value, conv_mlp, global_pool='avg') only")
    if "norm_eps" in kwargs:
        kwargs["head_norm_eps"] = kwargs["norm_eps"]
    return f"convnext_{match[1]}", kwargs
