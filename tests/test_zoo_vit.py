"""The ViT family: timm ViTs (token / avg / MAP pooling, registers, LayerScale, CLIP- and SigLIP-style),
Hugging Face ``Dinov2Model`` (± registers), ``CLIPVisionModel``, ``SiglipVisionModel`` (and the full
CLIP / SigLIP checkpoints' vision towers).

Small random reference models (parity extra), every weight re-drawn so that a wrong mapping
moves the outputs, saved in their own Hub layout and loaded through ``tljax.pretrained.load(folder)``:
logits, pooled features and last hidden states equal to the source's to 1e-4, also at another image
size (position embeddings resampled at load time, against timm's ``checkpoint_filter_fn`` and
transformers' ``interpolate_pos_encoding``); the preprocessing read with the weights; every depth
strategy builds; one fine-tuning run through ``python -m tljax.train``; unsupported checkpoints fail by name.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from tljax import lora, pretrained, strategies  # noqa: E402
from tljax import params as P  # noqa: E402
from tljax.convert.hub_config import UnsupportedArchitecture  # noqa: E402
from tljax.strategies.layout import depth_groups  # noqa: E402

from conftest import run_train  # noqa: E402
from test_convert_parity import compare, randomize_  # noqa: E402

torch.set_num_threads(2)
TOKENS = ("cls_token", "reg_token", "pos_embed", "latent", "probe", "class_embedding", "register_tokens",
          "position_embeddings", "position_embedding.weight")


def vit_randomize_(module, seed=0):
    """``randomize_`` (LayerNorms) plus every other weight re-drawn at a scale where each one matters:
    linear / conv / attention kernels N(0, 1/fan_in), biases N(0, 0.1), tokens and position
    embeddings N(0, 0.5), LayerScale U(0.5, 1.5) (its 1e-5 init would hide the blocks)."""
    randomize_(module, seed=seed)
    g = torch.Generator().manual_seed(seed)
    norms = {id(p) for m in module.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()}
    with torch.no_grad():
        for name, p in module.named_parameters():
            if id(p) in norms:
                continue
            if any(t in name for t in TOKENS):
                p.normal_(0.0, 0.5, generator=g)
            elif name.endswith(("gamma", "lambda1")):
                p.uniform_(0.5, 1.5, generator=g)
            elif p.ndim >= 2:
                p.normal_(0.0, p[0].numel() ** -0.5, generator=g)
            else:
                p.normal_(0.0, 0.1, generator=g)
    return module.eval()


def nhwc(x):
    return x.transpose(0, 2, 3, 1)


def images(size, seed=0, batch=2):
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)


# --- timm ----------------------------------------------------------------------------------------------

SMALL = dict(depth=2, embed_dim=64, num_heads=4, patch_size=8, img_size=32, num_classes=5)
TIMM = {
    "token": ("vit_small_patch16_224", {}),
    "avg_fc_norm_registers_layer_scale_no_qkv_bias": (
        "vit_small_patch16_224", dict(global_pool="avg", reg_tokens=2, init_values=1e-5, qkv_bias=False)),
    "dinov2": ("vit_small_patch14_dinov2", {}),  # LayerScale
    "dinov2_reg4": ("vit_small_patch14_reg4_dinov2", {}),  # registers, position embeddings on patches only
    "clip_quickgelu": ("vit_base_patch16_clip_quickgelu_224", {}),  # pre-norm, no patch bias, QuickGELU, ε 1e-5
    "siglip_map": ("vit_base_patch16_siglip_224", {}),  # no class token, attention-pool (MAP) head
    "reg4_gap": ("vit_base_patch16_reg4_gap_256", {}),  # no class token, registers, average pool
    "deit3": ("deit3_small_patch16_224", {}),  # LayerScale, position embeddings on the patches only
}


def timm_folder(case, folder, **overrides):
    name, args = TIMM[case]
    torch.manual_seed(0)
    model = vit_randomize_(timm.create_model(name, pretrained=False, **{**SMALL, **args, **overrides}))
    timm.models.save_for_hf(model, str(folder), safe_serialization=True)
    return model


@pytest.mark.parametrize("case", list(TIMM))
def test_timm_parity(case, tmp_path):
    ref_model = timm_folder(case, tmp_path)
    x = images(32)
    with torch.no_grad():
        logits = ref_model(torch.from_numpy(x)).numpy()
        features = ref_model.forward_head(ref_model.forward_features(torch.from_numpy(x)), pre_logits=True).numpy()
    model, variables = pretrained.load(tmp_path, keep_head=True)
    compare(logits, model.apply(variables, nhwc(x)), f"timm {case} logits")
    model, variables = pretrained.load(tmp_path)  # the features forward_head(pre_logits=True) gives
    compare(features, model.apply(variables, nhwc(x)), f"timm {case} features")


@pytest.mark.parametrize("case,size", [("token", 48), ("token", 24),  # up and down (antialiasing matters)
                                       ("avg_fc_norm_registers_layer_scale_no_qkv_bias", 40),  # 3 prefix tokens
                                       ("dinov2_reg4", 24)])  # position embeddings on the patches only
def test_timm_resampled_resolution(case, size, tmp_path):
    """Another image size: tljax resamples at load time; timm's checkpoint_filter_fn (bicubic, antialias)."""
    source = timm_folder(case, tmp_path)
    name, args = TIMM[case]
    ref_model = timm.create_model(name, pretrained=False, **{**SMALL, **args, "img_size": size}).eval()
    filtered = timm.models.vision_transformer.checkpoint_filter_fn(source.state_dict(), ref_model)
    ref_model.load_state_dict(filtered)
    x = images(size, seed=1)
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(x)).numpy()
    model, variables = pretrained.load(tmp_path, keep_head=True, image_size=size)
    compare(ref, model.apply(variables, nhwc(x)), f"timm {case} resampled to {size}²")
    if case == "token" and size == 48:  # a fresh head on the resampled backbone
        model, variables = pretrained.load(tmp_path, num_classes=3, image_size=size)
        assert model.apply(variables, nhwc(x)).shape == (2, 3)


# --- Hugging Face ---------------------------------------------------------------------------------------

VISION = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)
TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=64,
            bos_token_id=0, eos_token_id=1, pad_token_id=1)


def hf_model(kind):
    """``(reference model, its vision tower)`` built from a small config."""
    T = transformers
    if kind == "dinov2":
        return T.Dinov2Model(T.Dinov2Config(**VISION))
    if kind == "dinov2_with_registers":
        return T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig(**VISION, num_register_tokens=2))
    if kind == "clip_vision_model":
        return T.CLIPVisionModel(T.CLIPVisionConfig(**VISION, intermediate_size=128))
    if kind == "siglip_vision_model":
        return T.SiglipVisionModel(T.SiglipVisionConfig(**VISION, intermediate_size=128))
    if kind == "clip":
        return T.CLIPModel(T.CLIPConfig(vision_config=dict(VISION, intermediate_size=128), text_config=TEXT))
    return T.SiglipModel(T.SiglipConfig(vision_config=dict(VISION, intermediate_size=128), text_config=TEXT))


def run_hf(model, x, interpolate=False):
    tower = getattr(model, "vision_model", model)
    kwargs = {"interpolate_pos_encoding": True} if interpolate and "Dinov2" not in type(model).__name__ else {}
    with torch.no_grad():
        return tower(pixel_values=torch.from_numpy(x), **kwargs)


@pytest.mark.parametrize("kind", ["dinov2", "dinov2_with_registers", "clip_vision_model", "siglip_vision_model",
                                  "clip", "siglip"])
def test_hugging_face_parity(kind, tmp_path):
    torch.manual_seed(0)
    ref_model = vit_randomize_(hf_model(kind))
    ref_model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == kind
    x = images(32)
    ref = run_hf(ref_model, x)
    model, variables = pretrained.load(tmp_path)  # pooler_output by default
    compare(ref.pooler_output.numpy(), model.apply(variables, nhwc(x)), f"hf {kind} pooler_output")
    model, variables = pretrained.load(tmp_path, pooling=None)
    compare(ref.last_hidden_state.numpy(), model.apply(variables, nhwc(x)), f"hf {kind} last_hidden_state")
    # another size: transformers interpolates at run time (DINOv2 always, CLIP / SigLIP when asked)
    x = images(48, seed=1)
    ref = run_hf(ref_model, x, interpolate=True)
    model, variables = pretrained.load(tmp_path, pooling=None, image_size=48)
    compare(ref.last_hidden_state.numpy(), model.apply(variables, nhwc(x)), f"hf {kind} at 48² (interpolated)")


def test_preprocessing_travels_with_the_weights(tmp_path):
    T = transformers
    clip_mean, half = (0.48145466, 0.4578275, 0.40821073), (0.5, 0.5, 0.5)
    for name, processor in [("clip", T.CLIPImageProcessor()), ("siglip", T.SiglipImageProcessor()),
                            ("dinov2", T.BitImageProcessor(size={"shortest_edge": 256}, crop_size=224, resample=3,
                                                           image_mean=[0.485, 0.456, 0.406],
                                                           image_std=[0.229, 0.224, 0.225]))]:
        processor.save_pretrained(tmp_path / name)
    clip, siglip, dinov2 = (pretrained.preprocess_of(tmp_path / n) for n in ("clip", "siglip", "dinov2"))
    assert (clip.mean, clip.input_size, clip.crop_fraction, clip.interpolation) == (clip_mean, 224, 1.0, "bicubic")
    assert (siglip.mean, siglip.std, siglip.input_size, siglip.crop_fraction) == (half, half, 224, 1.0)
    assert (dinov2.mean, dinov2.input_size, dinov2.crop_fraction) == ((0.485, 0.456, 0.406), 224, 0.875)
    for case, mean in [("clip_quickgelu", clip_mean), ("siglip_map", half), ("dinov2", (0.485, 0.456, 0.406))]:
        timm_folder(case, tmp_path / case)
        loaded = pretrained.load_with_preprocess(tmp_path / case)
        assert loaded.preprocess.mean == mean and loaded.preprocess.input_size == 32, case


# --- strategies, training, errors ---------------------------------------------------------------------

def test_depth_groups_and_strategies(tmp_path, runlocal_config):
    from tljax.train import state as T  # noqa: PLC0415

    timm_folder("avg_fc_norm_registers_layer_scale_no_qkv_bias", tmp_path, pre_norm=True)
    model, variables = pretrained.load(tmp_path, keep_head=True)
    paths = list(P.flatten(variables["params"]))
    assert [g for g, _ in depth_groups(paths)] == ["stem", "block0", "block1", "top"]
    labels = P.flatten(strategies.labels_for(strategies.get("freeze_first_k:1"), variables["params"]))
    frozen = {p for p, label in labels.items() if label == strategies.FROZEN}
    for path in ("backbone/reg_tokens", "backbone/pos_embed", "backbone/norm_pre/scale",
                 "backbone/layer0/ls1/scale", "backbone/layer0/attention/query/kernel"):
        assert path in frozen, path
    assert "backbone/layer1/mlp_fc1/kernel" not in frozen and "backbone/fc_norm/scale" not in frozen
    mults = strategies.get("llrd:0.5").resolve("lr_mults", paths)
    assert [m for _, m in mults] == [1.0, 0.5 ** 3, 0.5 ** 2, 0.5, 1.0]  # head, stem, blocks, top
    starts = strategies.get("gradual_unfreeze:1").resolve("start_epochs", paths)
    assert [s for _, s in starts] == [0.0, 3.0, 2.0, 1.0, 0.0]
    assert len(lora.target_paths(variables["params"], None)) == 2 * 2  # query, value of each block
    for spec in ("freeze_first_k:1", "llrd:0.7", "gradual_unfreeze:1", "lora:4,8,targets=attention"):
        state, _, mask, _ = T.prepare(runlocal_config, strategies.get(spec), {**variables, "batch_stats": {}}, 10)
        assert any(jax.tree.leaves(mask)), spec


def test_vit_fine_tunes_through_the_cli(tmp_path):
    """``python -m tljax.train`` on a random tiny one-channel timm ViT folder (8×8 digits, 2×2 patches of 4)."""
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224", pretrained=False, depth=2, embed_dim=32, num_heads=2,
                              patch_size=4, img_size=8, in_chans=1, num_classes=0)
    timm.models.save_for_hf(model, str(tmp_path / "vit"), safe_serialization=True)
    (tmp_path / "digits_vit.py").write_text(
        "from tljax.defaults import base_config\n\n\ndef get_config(arg=None):\n    config = base_config()\n"
        "    config.arch = 'vit'\n    config.data.classes = (0, 1, 2)\n"
        "    config.num_steps, config.batch_size, config.log_every = 4, 16, 2\n    return config\n")
    run_train(tmp_path / "run", f"--config.pretrained={tmp_path / 'vit'}", "--config.strategy=llrd:0.8",
              config=str(tmp_path / "digits_vit.py"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_steps"] == 4 and 0.0 <= summary["accuracy"] <= 1.0


def test_unsupported_checkpoints_fail_by_name(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "swin", "architectures": ["SwinModel"]}))
    save_file({"embeddings.patch_embeddings.projection.weight": np.zeros((4, 3, 4, 4), np.float32)},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(UnsupportedArchitecture, match=r"'swin'.*dinov2.*siglip_vision_model"):
        pretrained.load(tmp_path)
    hub = pretrained.convert.hub_config
    with pytest.raises(UnsupportedArchitecture, match="use_swiglu_ffn"):
        hub.from_hf_config({"model_type": "dinov2", "use_swiglu_ffn": True})
    with pytest.raises(UnsupportedArchitecture, match="qk_norm"):
        hub.from_timm_config({"architecture": "vit_small_patch16_224", "model_args": {"qk_norm": True}})
    with pytest.raises(UnsupportedArchitecture, match="global_pool='avgmax'"):
        hub.from_timm_config({"architecture": "vit_small_patch16_224", "global_pool": "avgmax"})
