"""Knowledge distillation (Hinton et al. 2015): a small student learns from a teacher's softened outputs.

loss = α·CE(labels) + (1−α)·T²·KL(softmax(teacher/T) ‖ softmax(student/T)). The teacher is a
model tljax trains (or has trained: its workdir is resumed) on the same split with
``config.distill.teacher``'s fields; its logits are computed once and stored in the split as
``teacher_logits`` (``cache=True``), or recomputed inside the step (e.g. under augmentation).
α = 1 is plain training and skips the teacher: the baseline at the same budget.
"""

from __future__ import annotations

import os
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from tljax import data
from tljax.config import overlay
from tljax.losses import cross_entropy
from tljax.train import devices as D
from tljax.train import loop, report
from tljax.train import state as T
from tljax.train import step as S


def kd_loss(student_logits, teacher_logits, labels, alpha: float, temperature: float):
    """``(loss, {'ce', 'kl'})``; KL is per example over classes, averaged over the batch."""
    ce = cross_entropy(student_logits, labels)
    t = temperature
    log_s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t)
    log_t = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits).astype(jnp.float32) / t)
    kl = jnp.mean(jnp.sum(jnp.exp(log_t) * (log_t - log_s), axis=-1))
    return alpha * ce + (1.0 - alpha) * t * t * kl, {"ce": ce, "kl": kl}


def make_loss_fn(alpha: float, temperature: float, teacher=None):
    """The train-step hook; ``teacher(batch) -> logits`` when the batch carries no ``teacher_logits``."""

    def loss_fn(outputs, batch, step):
        teacher_logits = batch["teacher_logits"] if "teacher_logits" in batch else teacher(batch)
        loss, parts = kd_loss(outputs, teacher_logits, batch["label"], alpha, temperature)
        return loss, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(outputs, -1) == batch["label"]), **parts}

    return loss_fn


def teacher_fn(model, variables):
    """Teacher logits of a batch in inference mode (its variables are constants of the step)."""

    def apply(batch):
        args, kwargs = S.model_inputs(batch)
        return model.apply(variables, *args, train=False, **kwargs)

    return apply


def cache_teacher_logits(split, teacher, batch_size: int):
    """The split with a ``teacher_logits`` field, computed once on the host's devices."""
    if not isinstance(split, dict):
        raise ValueError("distill.cache needs an in-memory split; set --config.distill.cache=false")
    apply = jax.jit(teacher)
    n = data.pipeline.num_examples(split)
    logits = [np.asarray(apply({k: v[i:i + batch_size] for k, v in split.items()}))
              for i in range(0, n, batch_size)]
    return {**split, "teacher_logits": np.concatenate(logits).astype(np.float32)}


def run(config, workdir: str) -> Dict[str, Dict]:
    """Teacher (trained or resumed in ``distill.teacher_workdir``), then the student."""
    cfg = config.distill
    train, test, info = data.load_splits(config.data, config.seed)
    summaries, loss_fn, extra = {}, None, {"alpha": cfg.alpha, "temperature": cfg.temperature}
    if cfg.alpha < 1.0:
        teacher_cfg = overlay(config, cfg.teacher)
        teacher_dir = cfg.teacher_workdir or os.path.join(workdir, "teacher")
        out = loop.fit(teacher_cfg, train, test, info["num_classes"], teacher_dir, teacher_cfg.strategy, info=info)
        if not out.completed:
            return {}
        cpu_kernels = D.cpu_kernels_on(teacher_cfg.cpu_kernels, D.make_mesh(teacher_cfg.mesh))
        teacher = teacher_fn(T.build_model(teacher_cfg, info["num_classes"], cpu_kernels), out.variables)
        if cfg.cache:
            train = cache_teacher_logits(train, teacher, config.eval_batch_size)
        loss_fn = make_loss_fn(cfg.alpha, cfg.temperature, teacher)
        summaries["teacher"] = out.summary
        extra.update(teacher_accuracy=out.summary["accuracy"], teacher_params=out.summary["total_params"])
    extra["method"] = "distill" if loss_fn else "plain"
    out = loop.fit(overlay(config, {}), train, test, info["num_classes"], workdir, config.strategy, info=info,
                   loss_fn=loss_fn, extras=lambda variables, summary: extra)
    if not out.completed:
        return {}
    summaries["student" + ("+kd" if loss_fn else "")] = out.summary
    if jax.process_index() == 0:
        print(report.table(summaries))
    return summaries
