"""Hugging Face vision towers → the tljax ViT: ``Dinov2Model`` (and with registers), ``CLIPVisionModel``,
``SiglipVisionModel``; key tables and ``config.json`` readers.

Keys are read in both namings transformers uses: the Hub's (``attention.attention.query``, what
``save_pretrained`` writes) and the in-memory one of transformers 5 (``attention.q_proj``). A full
``CLIPModel`` / ``SiglipModel`` checkpoint loads its ``vision_model.`` tower; the text tower is
dropped. Features by default are the model's ``pooler_output`` (DINOv2: the LayerNorm'd class
token; CLIP: ``post_layernorm`` of the class token; SigLIP: the MAP head, or the token mean when
``vision_use_head`` is off); ``pooling=None`` gives ``last_hidden_state`` (CLIP's is before
``post_layernorm``, as in transformers). ``image_size=`` other than the config's resamples the
position embeddings as ``interpolate_pos_encoding`` does (bicubic; antialiased for DINOv2 with
registers only). ``Dinov2ForImageClassification`` (a head on class token ⊕ patch mean) is not read.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Tuple

from tljax.convert.common import Rule, fused_qkv, ignore, module, param

_D = r"encoder\.layer\.(\d+)\."
_DT = r"backbone/layer\1/"
DINOV2: List[Rule] = [
    ignore(r"embeddings\.mask_token"),  # masked-image pre-training only
    param(r"embeddings\.cls_token", "params/backbone/cls_token"),
    param(r"embeddings\.register_tokens", "params/backbone/reg_tokens"),
    param(r"embeddings\.position_embeddings", "params/backbone/pos_embed"),
    module(r"embeddings\.patch_embeddings\.projection", "backbone/patch_embed"),
    module(_D + r"norm([12])", _DT + r"norm\2"),
    module(_D + r"attention\.attention\.(query|key|value)", _DT + r"attention/\2"),
    module(_D + r"attention\.q_proj", _DT + "attention/query"),
    module(_D + r"attention\.k_proj", _DT + "attention/key"),
    module(_D + r"attention\.v_proj", _DT + "attention/value"),
    module(_D + r"attention\.(?:output\.dense|o_proj)", _DT + "attention/out"),
    param(_D + r"layer_scale([12])\.lambda1", r"params/backbone/layer\1/ls\2/scale"),
    module(_D + r"mlp\.(fc[12])", _DT + r"mlp_\2"),
    module(r"layernorm", "backbone/norm"),
]

_C = r"encoder\.layers\.(\d+)\."


def clip_like(post_norm: str) -> List[Rule]:
    """CLIP's and SigLIP's shared names; ``post_layernorm`` is ``post_norm`` (``fc_norm`` for CLIP,
    which norms the pooled class token only; ``norm`` for SigLIP, which norms every token)."""
    return [
        ignore(r"embeddings\.position_ids"),
        param(r"embeddings\.class_embedding", "params/backbone/cls_token", lambda a: a.reshape(1, 1, -1)),
        param(r"embeddings\.position_embedding\.weight", "params/backbone/pos_embed", lambda a: a[None]),
        module(r"embeddings\.patch_embedding", "backbone/patch_embed"),
        module(r"pre_laye?rnorm", "backbone/norm_pre"),  # transformers spells it pre_layrnorm
        module(_C + r"layer_norm([12])", _DT + r"norm\2"),
        module(_C + r"self_attn\.q_proj", _DT + "attention/query"),
        module(_C + r"self_attn\.k_proj", _DT + "attention/key"),
        module(_C + r"self_attn\.v_proj", _DT + "attention/value"),
        module(_C + r"self_attn\.out_proj", _DT + "attention/out"),
        module(_C + r"mlp\.(fc[12])", _DT + r"mlp_\2"),
        module(r"post_layernorm", f"backbone/{post_norm}"),
        param(r"head\.probe", "params/backbone/attn_pool/latent"),
        fused_qkv(r"head\.attention\.in_proj_(weight|bias)", "backbone/attn_pool/attention"),
        module(r"head\.attention\.out_proj", "backbone/attn_pool/attention/out"),
        module(r"head\.layernorm", "backbone/attn_pool/norm"),
        module(r"head\.mlp\.(fc[12])", r"backbone/attn_pool/mlp_\1"),
    ]


RULES: Dict[str, Callable[[], List[Rule]]] = {
    "vit_dinov2": lambda: DINOV2, "vit_clip": lambda: clip_like("fc_norm"), "vit_siglip": lambda: clip_like("norm")}


def rules(arch: str) -> List[Rule]:
    """The Hugging Face key table for a ViT arch (``vit_dinov2``, ``vit_clip``, ``vit_siglip``)."""
    if arch not in RULES:
        raise ValueError(f"no Hugging Face key table for arch {arch!r}; Hugging Face ViTs load as {sorted(RULES)}")
    return list(RULES[arch]())


ACTIVATIONS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
               "gelu_fast": "gelu_tanh"}


def _common(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> Dict[str, Any]:
    """Sizes a transformers vision config names (a missing key takes transformers' default)."""
    from tljax.convert.hub_config import UnsupportedArchitecture  # noqa: PLC0415 (hub_config imports this module)

    c = {**defaults, **{k: v for k, v in config.items() if v is not None}}
    if c["hidden_act"] not in ACTIVATIONS:
        raise UnsupportedArchitecture(f"{c.get('model_type')}: hidden_act {c['hidden_act']!r} is not one tljax's "
                                      f"ViT builds; supported: {sorted(ACTIVATIONS)}")
    image = c["image_size"]
    return {"hidden_size": c["hidden_size"], "num_layers": c["num_hidden_layers"],
            "num_heads": c["num_attention_heads"], "patch_size": c["patch_size"],
            "image_size": image if isinstance(image, int) else list(image), "in_channels": c["num_channels"],
            "layer_norm_eps": c["layer_norm_eps"], "activation": ACTIVATIONS[c["hidden_act"]],
            "resample_antialias": False}  # what interpolate_pos_encoding does


_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "image_size": 224,
         "num_channels": 3}


def dinov2(config: Mapping[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """``Dinov2Model`` and ``Dinov2WithRegistersModel`` (model_type ``dinov2``, ``dinov2_with_registers``)."""
    from tljax.convert.hub_config import UnsupportedArchitecture  # noqa: PLC0415

    if config.get("use_swiglu_ffn"):
        raise UnsupportedArchitecture(f"{config.get('model_type')} with use_swiglu_ffn=True (DINOv2 giant) is not "
                                      f"built by tljax's ViT; the small, base and large DINOv2 models are")
    registers = config.get("model_type") == "dinov2_with_registers"
    kwargs = _common(config, {**_BASE, "patch_size": 16 if registers else 14, "hidden_act": "gelu",
                              "layer_norm_eps": 1e-6})
    kwargs.update(mlp_dim=int(kwargs["hidden_size"] * (config.get("mlp_ratio") or 4)), layer_scale=True,
                  pooling="token")  # q/k/v biases and registers: as the weights have them
    if registers:  # its run-time interpolation antialiases
        kwargs["resample_antialias"] = True
    return "vit_dinov2", kwargs


def _vision(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """A vision tower's config: itself, or a full CLIP/SigLIP config's ``vision_config``."""
    return config["vision_config"] if "vision_config" in config else config


def clip(config: Mapping[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """``CLIPVisionModel`` (``clip_vision_model``) or a full ``CLIPModel`` (``clip``: its vision tower)."""
    c = _vision(config)
    kwargs = _common(c, {**_BASE, "patch_size": 32, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5})
    kwargs.update(mlp_dim=c.get("intermediate_size") or 3072, pre_norm=True, patch_bias=False, final_norm=False,
                  fc_norm=True, pooling="token")
    return "vit_clip", kwargs


def siglip(config: Mapping[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """``SiglipVisionModel`` (``siglip_vision_model``) or a full ``SiglipModel`` (``siglip``)."""
    c = _vision(config)
    kwargs = _common(c, {**_BASE, "patch_size": 16, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6})
    # without the MAP head transformers has no pooler_output; the mean of the tokens (timm's siglip_gap) stands in
    kwargs.update(mlp_dim=c.get("intermediate_size") or 3072, class_token=False,
                  pooling="map" if c.get("vision_use_head", True) else "avg")
    return "vit_siglip", kwargs


# model_type -> reader; hub_config registers these.
MODEL_TYPES = {"dinov2": dinov2, "dinov2_with_registers": dinov2, "clip_vision_model": clip, "clip": clip,
               "siglip_vision_model": siglip, "siglip": siglip}
