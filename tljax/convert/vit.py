"""The ViT family's ``create`` kwargs read off converted arrays, whatever the source.

``vit_kwargs(flat, **given)`` reads what the weights fix — width, depth, MLP width, patch size,
input channels, class token, registers, ``norm_pre``, ``norm``/``fc_norm``, LayerScale, q/k/v and
patch biases, a MAP head — and the position embeddings' grid; ``given`` kwargs (the config's or
the caller's) win. It adapts ``flat`` in place so the arrays fit the model:

* position embeddings over the class token but not the registers (Hugging Face DINOv2 with
  registers) are folded into the class token, leaving patch-only embeddings (``pos_embed_prefix``
  False; timm converts the same way);
* a grid other than ``image_size // patch_size`` is resampled (``tljax.models.resample``: bicubic,
  prefix tokens kept) with ``resample_antialias`` (default True, as timm's ``checkpoint_filter_fn``;
  the Hugging Face readers pass their own ``interpolate_pos_encoding``'s setting).
"""

from __future__ import annotations

import re
from typing import Any, Dict, MutableMapping

import numpy as np

from tljax.models.resample import grid_hw, resample_pos_embed

P = "params/backbone/"
# Source keys dropped when the model has no place for them: the pooled-vector norm and MAP head
# under pooling=None, a full CLIP / SigLIP checkpoint's text tower and projections.
OPTIONAL = (r"post_layernorm\..*", r"fc_norm\..*", r"attn_pool\..*", r"head\.(probe|(attention|layernorm|mlp)\..*)",
            r"text_model\..*", r"(text|visual)_projection\..*", r"logit_(scale|bias)")


def _read(flat: MutableMapping[str, np.ndarray]) -> Dict[str, Any]:
    kernel = np.shape(flat[P + "patch_embed/kernel"])  # (p, p, in, hidden)
    layers = [int(m[1]) for k in flat if (m := re.match(re.escape(P) + r"layer(\d+)/", k))]
    read = {"patch_size": int(kernel[0]), "in_channels": int(kernel[2]), "hidden_size": int(kernel[3]),
            "num_layers": max(layers, default=-1) + 1, "class_token": P + "cls_token" in flat,
            "num_registers": int(np.shape(flat[P + "reg_tokens"])[1]) if P + "reg_tokens" in flat else 0,
            "pre_norm": P + "norm_pre/scale" in flat, "final_norm": P + "norm/scale" in flat,
            "fc_norm": P + "fc_norm/scale" in flat, "layer_scale": P + "layer0/ls1/scale" in flat,
            "qkv_bias": P + "layer0/attention/query/bias" in flat, "patch_bias": P + "patch_embed/bias" in flat}
    if P + "layer0/mlp_fc1/kernel" in flat:
        read["mlp_dim"] = int(np.shape(flat[P + "layer0/mlp_fc1/kernel"])[1])
    if P + "attn_pool/latent" in flat:
        read["pooling"] = "map"
    return read


def _grid(length: int, read: Dict[str, Any], given: Dict[str, Any]):
    """``(layout, native grid)``: which prefix tokens the ``length`` position embeddings cover
    (``prefix`` all, ``none``, ``class`` the class token only) and the grid after them."""
    prefix = int(read["class_token"]) + read["num_registers"]
    layouts = [("prefix", prefix), ("none", 0)] + ([("class", 1)] if read["class_token"] and prefix > 1 else [])
    if "pos_embed_prefix" in given:
        layouts = [o for o in layouts if (o[0] == "prefix") == bool(given["pos_embed_prefix"])]
    size = given.get("image_size")
    wanted = None if size is None else tuple(s // read["patch_size"] for s in grid_hw(size))
    for name, k in layouts:  # in order, the first that fits the requested grid or a square one
        side = int(round(max(length - k, 0) ** 0.5))
        if wanted and wanted[0] * wanted[1] == length - k:
            return name, wanted
        if side > 0 and side * side == length - k:
            return name, (side, side)
    raise ValueError(f"position embeddings of length {length} fit no square grid after the class/register tokens "
                     f"({prefix}); pass image_size= and pos_embed_prefix= for this checkpoint")


def vit_kwargs(flat: MutableMapping[str, np.ndarray], resample_antialias: bool = True, **given) -> Dict[str, Any]:
    """``create`` kwargs for the ViT in ``flat`` (adapted in place, see the module docstring)."""
    if P + "patch_embed/kernel" not in flat or P + "pos_embed" not in flat:
        return given  # not a ViT layout; the strict check names what is missing
    read = _read(flat)
    read.update({k: v for k, v in given.items() if k in read})  # the caller's / config's word wins
    pos = flat[P + "pos_embed"]
    layout, native = _grid(pos.shape[1], read, given)
    if layout == "class":
        flat[P + "cls_token"] = flat[P + "cls_token"] + pos[:, :1]
        pos = pos[:, 1:]
    pos_prefix = layout == "prefix"
    size = given.get("image_size")
    target = native if size is None else tuple(s // read["patch_size"] for s in grid_hw(size))
    if target != native:
        prefix = int(read["class_token"]) + read["num_registers"] if pos_prefix else 0
        pos = resample_pos_embed(pos, target, prefix, resample_antialias, old_grid=native)
    flat[P + "pos_embed"] = np.ascontiguousarray(pos, np.float32)
    if size is None:
        size = tuple(g * read["patch_size"] for g in native)
    size = grid_hw(size)
    return {**read, **given, "pos_embed_prefix": pos_prefix, "image_size": size[0] if size[0] == size[1] else size}
