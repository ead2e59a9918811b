"""Model registry: ``create(arch, num_classes=None, **overrides) -> flax.linen.Module``.

Models are pure linen modules; nothing here knows about optimizers, data or checkpoints. Each is
built from plain Flax layers, or with ``cpu_kernels=True`` from their XLA:CPU forms
(``tljax.models.xla_cpu``): the same parameters either way.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, Dict, Optional

import flax.linen as nn
import jax.numpy as jnp

from tljax.models.classifier import Classifier, Identity
from tljax.models.bow import BagOfEmbeddings
from tljax.models.heads import DomainAdversarial, MultiTask, grad_reverse
from tljax.models.bert import Bert, bert, roberta
from tljax.models.distilbert import distilbert
from tljax.models.resnet import RESNETS, ResNet
from tljax.models.vgg import VGG, VGGS
from tljax.models.vit import VITS, ViT, size_hw
from tljax.models.convnext import CONVNEXTS, ConvNeXt
from tljax.models.efficientnet import EFFICIENTNETS, EfficientNet

# arch name -> function(**overrides) returning the backbone module
BACKBONES: Dict[str, Callable[..., nn.Module]] = {
    name: (lambda spec: (lambda **kw: ResNet(**{**spec, **kw})))(spec) for name, spec in RESNETS.items()
}
BACKBONES.update({name: (lambda spec: (lambda **kw: VGG(**{**spec, **kw})))(spec) for name, spec in VGGS.items()})
BACKBONES.update({name: (lambda spec: (lambda **kw: ViT(**{**spec, **kw})))(spec) for name, spec in VITS.items()})
BACKBONES.update({name: (lambda spec: (lambda **kw: ConvNeXt(**{**spec, **kw})))(spec)
                  for name, spec in CONVNEXTS.items()})
BACKBONES.update({name: (lambda spec: (lambda **kw: EfficientNet(**{**spec, **kw})))(spec)
                  for name, spec in EFFICIENTNETS.items()})
BACKBONES["bag_of_embeddings"] = BagOfEmbeddings  # create(..., vocab_size=, embed_dim=)
BACKBONES["bert"] = bert  # create('bert', config=<Hugging Face config.json dict>, pooling=...)
BACKBONES["roberta"] = roberta  # RoBERTa, XLM-R, CamemBERT: create('roberta', config=..., pooling=...)
BACKBONES["distilbert"] = distilbert  # create('distilbert', config=..., pooling=...)

# Backbone overrides that apply only when a head follows: BERT's features are the token states,
# but a classifier needs one vector per sequence (the masked mean, as sentence-transformers).
HEAD_DEFAULTS: Dict[str, Dict[str, Any]] = {"bert": {"pooling": "mean"}, "roberta": {"pooling": "mean"},
                                            "distilbert": {"pooling": "mean"}}


def register(name: str):
    """Decorator adding a backbone factory under ``name`` (for users' own architectures)."""

    def add(factory):
        BACKBONES[name] = factory
        return factory

    return add


def create(arch: str, num_classes: Optional[int] = None, head_zero_init: bool = False, remat: bool = False,
           cpu_kernels: bool = False, **overrides) -> nn.Module:
    """Builds ``arch`` with a ``num_classes``-way head, or pooled features when None.

    ``remat`` recomputes each residual / transformer block in the backward pass instead of
    keeping its activations (``nn.remat``): less memory for one more forward pass.
    ``cpu_kernels`` builds the backbone from the XLA:CPU forms of its layers (faster there, same
    parameters and values); a backbone without a ``cpu_kernels`` field ignores it."""
    if arch not in BACKBONES:
        near = difflib.get_close_matches(arch, BACKBONES, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(BACKBONES)}.{hint}")
    if num_classes is not None:
        overrides = {**HEAD_DEFAULTS.get(arch, {}), **overrides}
    backbone = BACKBONES[arch](**overrides)
    fields = {f.name for f in dataclasses.fields(backbone)}
    if "cpu_kernels" in fields:
        backbone = backbone.clone(cpu_kernels=bool(cpu_kernels))
    if remat:
        if "remat" not in fields:
            raise ValueError(f"arch {arch!r} has no blocks to recompute (remat works for ResNet, ViT, BERT, "
                             f"ConvNeXt and EfficientNet); set config.remat=False")
        backbone = backbone.clone(remat=True)
    return Classifier(backbone, num_classes=num_classes, head_zero_init=head_zero_init)


def example_input(model: nn.Module, batch: int = 1):
    """A zero input of the shape ``model`` takes, for ``init`` / ``jax.eval_shape``."""
    backbone = getattr(model, "backbone", model)
    if isinstance(backbone, Bert):
        return jnp.zeros((batch, 8), jnp.int32)
    if isinstance(backbone, ViT):  # a fixed grid of position embeddings
        return jnp.zeros((batch, *size_hw(backbone.image_size), backbone.in_channels), jnp.float32)
    return jnp.zeros((batch, 32, 32, 3), jnp.float32)  # conv nets pool globally


__all__ = ["BACKBONES", "Classifier", "DomainAdversarial", "Identity", "MultiTask", "create", "example_input", "grad_reverse", "register"]
