"""Unsupervised domain adaptation with DANN (Ganin et al. 2016).

Labelled source examples and unlabelled target examples are mixed half and half (``domain``
0 / 1). The class head learns on source labels; a domain classifier behind a gradient-reversal
layer learns to tell the domains apart while the trunk is pushed (by ``-λ`` times that
gradient) towards features that cannot. λ follows Ganin's schedule 2/(1+exp(−γp))−1 over
training progress p. ``adapt.method='source_only'`` trains on the source alone: the baseline.
The offline target is the task's own test images under a shift built in code.
"""

from __future__ import annotations

from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from tljax import data, models
from tljax.data.mixing import mix
from tljax.methods import overlay, write_summary
from tljax.train import loop
from tljax.train import step as S

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
    shifted = {**test, "image": shift_images(test["image"], cfg.shift, seed, cfg.get("noise", 0.3))}
    order = np.random.default_rng([seed, 3]).permutation(len(test["label"]))
    half = len(order) // 2
    pick = lambda split, idx: {k: v[idx] for k, v in split.items()}  # noqa: E731
    return pick(shifted, order[:half]), pick(shifted, order[half:]), pick(test, order[half:])


def make_loss_fn(total_steps: int, gamma: float, lambda_max: float, domain_weight: float):
    """CE on source labels + domain CE, its gradient reversed into the trunk scaled by λ(step)."""

    def loss_fn(outputs, batch, step):
        lam = lambda_max * ganin_lambda(step / max(total_steps, 1), gamma)
        source = (batch["domain"] == 0).astype(jnp.float32)
        labels = jnp.where(source > 0, batch["label"], 0)
        ce = S.cross_entropy(outputs["logits"], labels, source)
        reversed_ce = S.cross_entropy(outputs["domain_logits"], batch["domain"])
        detached_ce = S.cross_entropy(outputs["domain_logits_detached"], batch["domain"])
        loss = ce + domain_weight * (lam * reversed_ce + (1.0 - lam) * detached_ce)
        hits = (jnp.argmax(outputs["logits"], -1) == labels) * source
        return loss, {"loss": loss, "class_loss": ce, "domain_loss": reversed_ce, "lambda": lam,
                      "accuracy": hits.sum() / jnp.maximum(source.sum(), 1.0),
                      "domain_accuracy": jnp.mean(jnp.argmax(outputs["domain_logits"], -1) == batch["domain"])}

    return loss_fn


def run(config, workdir: str) -> Dict[str, Dict]:
    cfg = config.adapt
    train, test, info = data.load_splits(config.data, config.seed)
    target_train, target_test, source_view = target_splits(test, cfg, config.seed)
    num_classes, base = info["num_classes"], overlay(config, {})
    if cfg.method == "dann":
        unlabeled = {**target_train, "label": np.zeros_like(target_train["label"])}
        mixed = mix([train, unlabeled], (1.0, 1.0), config.seed, field="domain")
        trunk = models.create(config.arch, None, **config.get("model", {})).backbone
        model = models.DomainAdversarial(trunk, num_classes, hidden=cfg.get("hidden", 64))
        loss_fn = make_loss_fn(config.num_steps, cfg.get("gamma", 10.0), cfg.get("lambda_max", 1.0),
                               cfg.get("domain_weight", 1.0))
        out = loop.fit(base, mixed, target_test, num_classes, workdir, config.strategy, info=info, model=model,
                       loss_fn=loss_fn)
    elif cfg.method == "source_only":
        model = loop.build_model(base, num_classes)
        out = loop.fit(base, train, target_test, num_classes, workdir, config.strategy, info=info, model=model)
    else:
        raise ValueError(f"adapt.method={cfg.method!r}; allowed: ('dann', 'source_only')")
    summary = out["summary"]
    if summary is None:
        return {}
    source = loop.evaluate_split(model, out["variables"], source_view, config.eval_batch_size, S.make_mesh(config.get("mesh")),
                                 num_classes)
    summary.update(method=cfg.method, shift=cfg.shift, target_accuracy=summary["accuracy"],
                   source_accuracy=source["accuracy"])
    write_summary(workdir, summary)
    if jax.process_index() == 0:
        print(f"{cfg.method}: target accuracy {summary['accuracy']:.3f}, "
              f"same images unshifted {source['accuracy']:.3f}")
    return {cfg.method: summary}
