"""Vision Transformers as one configurable family: timm ViTs, DINOv2, the CLIP and SigLIP vision towers.

Pre-norm blocks (``norm1`` → ``attention`` → [``ls1``] → residual, ``norm2`` → ``mlp_fc1`` →
activation → ``mlp_fc2`` → [``ls2``] → residual) over ``[class token][registers] patches``.
The fields say what a checkpoint has: a class token, ``num_registers`` register tokens,
position embeddings over the prefix tokens too (``pos_embed_prefix``, timm's ``not
no_embed_class``) or over the patches only, a LayerNorm before the blocks (``pre_norm``, CLIP),
LayerScale (``layer_scale``, DINOv2), query/key/value biases, a patch-embedding bias, the
activation (``gelu`` exact, ``quick_gelu`` CLIP, ``gelu_tanh`` SigLIP) and the LayerNorm ε.

Features: ``norm`` (``final_norm``) over every token, then ``pooling`` — ``'token'`` the class
token, ``'avg'`` the mean of the patch tokens, ``'map'`` attention pooling by a learnt latent
query (timm's ``AttentionPoolLatent``, SigLIP's head), ``None`` every token ``(B, T, D)`` — then
``fc_norm`` on the pooled vector. ``image_size`` (a side or ``(h, w)``) fixes the position
embeddings' grid; ``tljax.convert`` resamples a checkpoint's grid to it. ``cpu_kernels`` builds
it from the XLA:CPU forms of its layers (``tljax.models.layers``): same parameters.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from tljax.models.activations import gelu
from tljax.models.layers import layers
from tljax.models.resample import grid_hw as size_hw

ACTIVATIONS = {
    "gelu": gelu,
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu_tanh": lambda x: nn.gelu(x, approximate=True),
}
POOLINGS = ("token", "avg", "map", None)


class Attention(nn.Module):
    """Multi-head attention of ``x``'s queries over ``context`` (default ``x``): ``query``, ``key``,
    ``value``, ``out`` Dense layers (``tljax.models.attention``'s names), softmax in float32."""

    num_heads: int
    qkv_bias: bool = True
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    cpu_kernels: bool = False

    @nn.compact
    def __call__(self, x, context=None, train: bool = False):
        context = x if context is None else context
        hidden = context.shape[-1]
        if hidden % self.num_heads:
            raise ValueError(f"hidden size {hidden} is not divisible by num_heads={self.num_heads}")
        head_dim = hidden // self.num_heads
        L = layers(self.cpu_kernels)
        init = nn.initializers.xavier_uniform()
        dense = lambda name, bias=True: L.Dense(hidden, use_bias=bias, kernel_init=init, dtype=self.dtype,  # noqa: E731
                                                name=name)
        heads = lambda y: y.reshape(*y.shape[:-1], self.num_heads, head_dim).transpose(0, 2, 1, 3)  # noqa: E731
        q = heads(dense("query", self.qkv_bias)(x))
        k, v = (heads(dense(name, self.qkv_bias)(context)) for name in ("key", "value"))
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(head_dim).astype(jnp.float32)
        probs = L.Dropout(self.dropout_rate)(jax.nn.softmax(scores, axis=-1).astype(self.dtype),
                                             deterministic=not train)
        out = jnp.einsum("bhqk,bhkd->bhqd", probs, v).transpose(0, 2, 1, 3).reshape(*x.shape[:-1], hidden)
        return dense("out")(out)


class LayerScale(nn.Module):
    """``x · scale`` per channel (timm's ``ls1.gamma``, DINOv2's ``layer_scale1.lambda1``)."""

    @nn.compact
    def __call__(self, x):
        return x * self.param("scale", nn.initializers.constant(1e-5), (x.shape[-1],)).astype(x.dtype)


class EncoderBlock(nn.Module):
    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    cpu_kernels: bool = False
    qkv_bias: bool = True
    layer_scale: bool = False
    activation: str = "gelu"
    layer_norm_eps: float = 1e-6

    @nn.compact
    def __call__(self, x, train: bool = False):
        L = layers(self.cpu_kernels)
        norm = lambda name: nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name=name)  # noqa: E731
        drop = lambda y: L.Dropout(self.dropout_rate)(y, deterministic=not train)  # noqa: E731
        scale = (lambda name, y: LayerScale(name=name)(y)) if self.layer_scale else (lambda name, y: y)  # noqa: E731
        y = Attention(self.num_heads, self.qkv_bias, self.attention_dropout_rate, self.dtype, self.cpu_kernels,
                      name="attention")(norm("norm1")(x), train=train)
        x = x + scale("ls1", drop(y))
        y = ACTIVATIONS[self.activation](L.Dense(self.mlp_dim, dtype=self.dtype, name="mlp_fc1")(norm("norm2")(x)))
        y = L.Dense(x.shape[-1], dtype=self.dtype, name="mlp_fc2")(drop(y))
        return x + scale("ls2", drop(y))


class AttentionPool(nn.Module):
    """One learnt ``latent`` query attends over the tokens; then ``x + mlp(norm(x))`` (timm's
    ``AttentionPoolLatent`` and SigLIP's ``SiglipMultiheadAttentionPoolingHead``)."""

    num_heads: int
    mlp_dim: int
    activation: str = "gelu"
    layer_norm_eps: float = 1e-6
    dtype: Any = jnp.float32
    cpu_kernels: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        latent = self.param("latent", nn.initializers.normal(x.shape[-1] ** -0.5), (1, 1, x.shape[-1]))
        q = jnp.broadcast_to(latent, (x.shape[0], 1, x.shape[-1])).astype(x.dtype)
        y = Attention(self.num_heads, True, 0.0, self.dtype, self.cpu_kernels, name="attention")(q, x, train=train)
        L = layers(self.cpu_kernels)
        h = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name="norm")(y)
        h = ACTIVATIONS[self.activation](L.Dense(self.mlp_dim, dtype=self.dtype, name="mlp_fc1")(h))
        return (y + L.Dense(x.shape[-1], dtype=self.dtype, name="mlp_fc2")(h))[:, 0]


class ViT(nn.Module):
    """Backbone only: the pooled features ``(batch, hidden_size)``, or every token when ``pooling=None``."""

    patch_size: int = 16
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    image_size: Union[int, Tuple[int, int]] = 224  # a side or (h, w); sets the position embeddings' grid
    in_channels: int = 3  # what example_input feeds; the patch kernel takes the images' channels
    class_token: bool = True
    num_registers: int = 0  # register tokens after the class token (DINOv2 with registers, timm reg_tokens)
    pos_embed_prefix: bool = True  # position embeddings for the class/register tokens too (timm: not no_embed_class)
    pooling: Optional[str] = "token"  # token | avg | map | None (every token)
    pre_norm: bool = False  # LayerNorm 'norm_pre' before the blocks (CLIP)
    final_norm: bool = True  # LayerNorm 'norm' over every token after the blocks
    fc_norm: bool = False  # LayerNorm 'fc_norm' on the pooled vector (timm avg-pool models, CLIP's post_layernorm)
    layer_scale: bool = False  # ls1/ls2 per-channel scales (DINOv2, timm init_values)
    qkv_bias: bool = True
    patch_bias: bool = True
    activation: str = "gelu"  # gelu (erf) | quick_gelu | gelu_tanh
    layer_norm_eps: float = 1e-6
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    remat: bool = False  # recompute each block's activations in the backward pass (less memory)
    cpu_kernels: bool = False  # the XLA:CPU forms of the layers (tljax.models.xla_cpu)

    def check(self):
        """Fails naming the field when the configuration cannot be built."""
        if self.pooling not in POOLINGS:
            raise ValueError(f"ViT pooling {self.pooling!r}; allowed: {POOLINGS}")
        if self.pooling == "token" and not self.class_token:
            raise ValueError("ViT pooling='token' needs class_token=True; use pooling='avg' or 'map'")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"ViT activation {self.activation!r}; allowed: {sorted(ACTIVATIONS)}")

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check()
        p, (h, w) = self.patch_size, size_hw(self.image_size)
        if x.shape[1:3] != (h, w):
            raise ValueError(f"ViT built for {h}×{w} images (image_size={self.image_size}), got "
                             f"{x.shape[1]}×{x.shape[2]}; resize or create the model with image_size= "
                             f"(pretrained weights are resampled to it)")
        L, D = layers(self.cpu_kernels), self.hidden_size
        norm = lambda name: nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name=name)  # noqa: E731
        x = nn.Conv(D, (p, p), (p, p), padding="VALID", use_bias=self.patch_bias, dtype=self.dtype,
                    name="patch_embed")(x.astype(self.dtype))  # a remainder narrower than a patch is dropped
        x = x.reshape(x.shape[0], -1, D)  # row-major over the grid, like torch's flatten(2)
        prefix = []
        if self.class_token:
            prefix.append(self.param("cls_token", nn.initializers.zeros, (1, 1, D)))
        if self.num_registers:
            prefix.append(self.param("reg_tokens", nn.initializers.zeros, (1, self.num_registers, D)))
        prefix = [jnp.broadcast_to(t, (x.shape[0], *t.shape[1:])).astype(x.dtype) for t in prefix]
        n_prefix = sum(t.shape[1] for t in prefix)
        length = x.shape[1] + (n_prefix if self.pos_embed_prefix else 0)
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, length, D)).astype(x.dtype)
        x = jnp.concatenate([*prefix, x], axis=1) + pos if self.pos_embed_prefix else \
            jnp.concatenate([*prefix, x + pos], axis=1)
        x = L.Dropout(self.dropout_rate)(x, deterministic=not train)
        if self.pre_norm:
            x = norm("norm_pre")(x)
        block_cls = nn.remat(EncoderBlock, static_argnums=(2,)) if self.remat else EncoderBlock
        for i in range(self.num_layers):
            x = block_cls(self.num_heads, self.mlp_dim, self.dropout_rate, self.attention_dropout_rate, self.dtype,
                          self.cpu_kernels, self.qkv_bias, self.layer_scale, self.activation, self.layer_norm_eps,
                          name=f"layer{i}")(x, train)
        if self.final_norm:
            x = norm("norm")(x)
        if self.pooling is None:
            return x.astype(jnp.float32)
        if self.pooling == "token":
            x = x[:, 0]
        elif self.pooling == "avg":
            x = x[:, n_prefix:].mean(axis=1)
        else:
            x = AttentionPool(self.num_heads, self.mlp_dim, self.activation, self.layer_norm_eps, self.dtype,
                              self.cpu_kernels, name="attn_pool")(x[:, n_prefix:], train)
        if self.fc_norm:
            x = norm("fc_norm")(x)
        return x.astype(jnp.float32)


# Presets: create(arch, **overrides) for any size; the converters pass the sizes a checkpoint has.
VITS = {
    "vit": {},  # the family: every field from the checkpoint or the caller (defaults: ViT-B/16, timm style)
    "vit_b16": dict(patch_size=16, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
    "vit_dinov2": dict(patch_size=14, layer_scale=True),  # Hugging Face Dinov2Model
    "vit_clip": dict(patch_size=32, pre_norm=True, patch_bias=False, final_norm=False, fc_norm=True,
                     activation="quick_gelu", layer_norm_eps=1e-5),  # CLIPVisionModel: post_layernorm on the pool
    "vit_siglip": dict(class_token=False, pooling="map", activation="gelu_tanh"),  # SiglipVisionModel
}
