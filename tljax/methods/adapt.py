"""Unsupervised domain adaptation with DANN (Ganin et al. 2016).

Labelled source examples and unlabelled target examples are mixed half and half (``domain``
0 / 1). The class head learns on source labels; a domain classifier behind a gradient-reversal
layer learns to tell the domains apart while the trunk is pushed (by ``-λ`` times that
gradient) towards features that cannot. λ follows Ganin's schedule 2/(1+exp(−γp))−1 over
training progress p. ``adapt.method='source_only'`` trains on the source alone: the baseline.
The offline target is the task's own test images under a shift built in code; ``adapt.target``
names another dataset instead (e.g. MNIST → SVHN through TFDS).
"""

from __future__ import annotations

from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from tljax import data, models
from tljax.data.mixing import mix
from tljax.config import overlay
from tljax.losses import cross_entropy, masked_classification
from tljax.train import devices as D
from tljax.train import evaluate, loop
from tljax.train import state as T

SHIFTS = ("invert", "rotate", "noise", "invert+noise", "rotate+noise")


def ganin_lambda(progress, gamma: float = 10.0):
    """2/(1+exp(−γp)) − 1: 0 at the start, → 1 at the end."""
    return 2.0 / (1.0 + jnp.exp(-gamma * progress)) - 1.0


def shift_images(images: np.ndarray, kind: str, seed: int, noise: float = 0.3) -> np.ndarray:
    """A shifted domain: inverted intensities, a 90° rotation and/or Gaussian noise (clipped to [0, 1])."""
    parts = kind.split("+")
    unknown = [p for p in parts if p not in ("invert", "rotate", "noise")]
    if unknown:
        raise ValueError(f"adapt.shift={kind!r}; allowed: {SHIFTS}")
    x = np.asarray(images, np.float32)
    if "invert" in parts:
        x = 1.0 - x
    if "rotate" in parts:
        x = np.rot90(x, k=1, axes=(1, 2)).copy()
    if "noise" in parts:
        x = np.clip(x + noise * np.random.default_rng([seed, 5]).standard_normal(x.shape), 0, 1).astype(np.float32)
    return x


def target_splits(test, cfg, seed: int):
    """``(target_train without labels, target_test, source view of target_test)`` from the test split."""
    shifted = {**test, "image": shift_images(test["image"], cfg.shift, seed, cfg.noise)}
    order = np.random.default_rng([seed, 3]).permutation(len(test["label"]))
    half = len(order) // 2
    pick = lambda split, idx: {k: v[idx] for k, v in split.items()}  # noqa: E731
    return pick(shifted, order[:half]), pick(shifted, order[half:]), pick(test, order[half:])


def as_images(split, size: int, channels: int, chunk: int = 4096) -> Dict[str, np.ndarray]:
    """A split's images as float32 in [0, 1], all ``size × size × channels`` (bilinear resize;
    colour → grey by luminance, grey → colour by repetition): two digit sets (MNIST 28² grey,
    SVHN 32² colour) become one input space. Reads random-access sources into memory."""
    n = data.pipeline.num_examples(split)
    if isinstance(split, dict):
        images, labels = split["image"], split["label"]
    else:
        examples = [split[i] for i in range(n)]
        images = np.stack([e["image"] for e in examples]) if n else np.zeros((0, size, size, channels))
        labels = np.asarray([e["label"] for e in examples], np.int32)
    out, scale = [], 255.0 if np.asarray(images).dtype == np.uint8 else 1.0
    for start in range(0, n, chunk):
        x = np.asarray(images[start:start + chunk], np.float32) / scale
        x = x[..., None] if x.ndim == 3 else x
        if x.shape[-1] != channels:
            x = (x @ np.asarray([0.299, 0.587, 0.114], np.float32))[..., None] if channels == 1 \
                else np.repeat(x[..., :1], channels, axis=-1)
        if x.shape[1:3] != (size, size):
            x = np.asarray(jax.image.resize(x, (len(x), size, size, channels), "bilinear"))
        out.append(np.clip(x, 0.0, 1.0))
    image = np.concatenate(out) if out else np.zeros((0, size, size, channels), np.float32)
    return {"image": image.astype(np.float32), "label": np.asarray(labels, np.int32)}


def domain_splits(config, cfg, seed: int):
    """``(source train, unlabelled-target train, target test, source test, info)``.

    With ``adapt.target`` (a data config, e.g. ``tfds:svhn_cropped``) the target is another
    dataset, both mapped to ``adapt.image_size``² × ``adapt.channels``; without it, the
    source's own test images under ``adapt.shift``."""
    train, test, info = data.load_splits(config.data, seed)
    if not cfg.target:
        return (train, *target_splits(test, cfg, seed), info)
    target_train, target_test, target_info = data.load_splits(cfg.target, seed)
    if target_info["num_classes"] != info["num_classes"]:
        raise ValueError(f"adapt.target {cfg.target.source!r} has {target_info['num_classes']} classes, the source "
                         f"{config.data.source!r} {info['num_classes']}: DANN needs the same label space")
    common = lambda split: as_images(split, int(cfg.image_size), int(cfg.channels))  # noqa: E731
    return common(train), common(target_train), common(target_test), common(test), info


def make_loss_fn(total_steps: int, gamma: float, lambda_max: float, domain_weight: float):
    """CE on source labels + domain CE, its gradient reversed into the trunk scaled by λ(step)."""

    def loss_fn(outputs, batch, step):
        lam = lambda_max * ganin_lambda(step / max(total_steps, 1), gamma)
        source = (batch["domain"] == 0).astype(jnp.float32)
        ce, hits = masked_classification(outputs["logits"], batch["label"], source)
        reversed_ce = cross_entropy(outputs["domain_logits"], batch["domain"])
        detached_ce = cross_entropy(outputs["domain_logits_detached"], batch["domain"])
        loss = ce + domain_weight * (lam * reversed_ce + (1.0 - lam) * detached_ce)
        return loss, {"loss": loss, "class_loss": ce, "domain_loss": reversed_ce, "lambda": lam,
                      "accuracy": hits.sum() / jnp.maximum(source.sum(), 1.0),
                      "domain_accuracy": jnp.mean(jnp.argmax(outputs["domain_logits"], -1) == batch["domain"])}

    return loss_fn


def run(config, workdir: str) -> Dict[str, Dict]:
    cfg = config.adapt
    train, target_train, target_test, source_view, info = domain_splits(config, cfg, config.seed)
    num_classes, base = info["num_classes"], overlay(config, {})
    cpu_kernels = D.cpu_kernels_on(config.cpu_kernels, D.make_mesh(config.mesh))
    if cfg.method == "dann":
        unlabeled = {**target_train, "label": np.zeros_like(target_train["label"])}
        train = mix([train, unlabeled], (1.0, 1.0), config.seed, field="domain")
        trunk = models.create(config.arch, None, **T.model_overrides(config, cpu_kernels)).backbone
        model = models.DomainAdversarial(trunk, num_classes, hidden=cfg.hidden)
        loss_fn = make_loss_fn(config.num_steps, cfg.gamma, cfg.lambda_max, cfg.domain_weight)
    elif cfg.method == "source_only":
        model, loss_fn = T.build_model(base, num_classes, cpu_kernels), None
    else:
        raise ValueError(f"adapt.method={cfg.method!r}; allowed: ('dann', 'source_only')")

    def extras(variables, summary):
        mesh = D.make_mesh(config.mesh)
        source = evaluate.evaluate_split(model, variables, source_view, config.eval_batch_size, mesh, num_classes)
        return dict(method=cfg.method, target=cfg.target.source if cfg.target else f"shift:{cfg.shift}",
                    target_accuracy=summary["accuracy"], source_accuracy=source["accuracy"])

    out = loop.fit(base, train, target_test, num_classes, workdir, config.strategy, info=info, model=model,
                   loss_fn=loss_fn, extras=extras)
    if not out.completed:
        return {}
    summary = out.summary
    if jax.process_index() == 0:
        print(f"{cfg.method}: target accuracy {summary['accuracy']:.3f}, source test accuracy "
              f"{summary['source_accuracy']:.3f}")
    return {cfg.method: summary}
