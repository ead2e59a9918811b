"""Multi-task learning: one trunk, one head per task (``head/<task>/…``), batches mixed by ratio.

``config.tasks.<name>`` holds the task's ``data`` section (any source), its loss ``weight``,
its sampling ``ratio`` and an optional ``label_map`` (class index -> task label, e.g. digit ->
parity). Every example carries its task's index in ``task``; each head's cross-entropy is
averaged over its own examples and the weighted sum is the loss. The trunk is frozen or
tuned by the ordinary strategies. The summary's ``accuracy`` is the first task's; ``tasks``
holds every task's metrics on its own test split.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tljax import data, models
from tljax.data.mixing import mix
from tljax.config import overlay
from tljax.losses import masked_classification
from tljax.train import devices as D
from tljax.train import evaluate, loop
from tljax.train import state as T


def relabel(split, label_map: Sequence[int]):
    if not label_map:
        return split
    return {**split, "label": np.asarray(label_map, np.int32)[split["label"]]}


def load_tasks(config):
    """``[(name, train, test, num_classes)]`` in the config's order."""
    out = []
    for name, task in config.tasks.items():
        train, test, info = data.load_splits(task.data, config.seed)
        label_map = tuple(task.label_map)
        num_classes = max(label_map) + 1 if label_map else info["num_classes"]
        out.append((name, relabel(train, label_map), relabel(test, label_map), num_classes))
    return out


def make_loss_fn(names: List[str], weights: Sequence[float]):
    """Σ_t w_t · CE_t, CE_t averaged over the batch's examples of task t; per-task metrics too."""

    def loss_fn(outputs, batch, step):
        loss, metrics, correct = 0.0, {}, 0.0
        for i, (name, w) in enumerate(zip(names, weights)):
            mine = (batch["task"] == i).astype(jnp.float32)
            ce, hits = masked_classification(outputs[name], batch["label"], mine)
            loss = loss + w * ce
            correct = correct + hits.sum()
            metrics.update({f"{name}/loss": ce, f"{name}/accuracy": hits.sum() / jnp.maximum(mine.sum(), 1.0)})
        return loss, {"loss": loss, "accuracy": correct / batch["task"].shape[0], **metrics}

    return loss_fn


def run(config, workdir: str) -> Dict[str, Dict]:
    tasks = load_tasks(config)
    names = [t[0] for t in tasks]
    ratios = [config.tasks[n].ratio for n in names]
    weights = [config.tasks[n].weight for n in names]
    train = mix([t[1] for t in tasks], ratios, config.seed, field="task", total=config.mixed_examples)
    sizes = tuple((n, k) for n, _, _, k in tasks)
    cpu_kernels = D.cpu_kernels_on(config.cpu_kernels, D.make_mesh(config.mesh))
    trunk = models.create(config.arch, None, **T.model_overrides(config, cpu_kernels)).backbone
    model = models.MultiTask(trunk, sizes)
    first, _, first_test, first_classes = tasks[0]

    def extras(variables, summary):
        mesh, per_task, out = D.make_mesh(config.mesh), {}, {}
        for name, _, test, k in tasks:
            metrics = evaluate.evaluate_split(model.clone(task=name), variables, test, config.eval_batch_size,
                                              mesh, k)
            per_task[name] = {"accuracy": metrics["accuracy"], "f1_macro": metrics["f1_macro"],
                              "weight": weights[names.index(name)], "ratio": ratios[names.index(name)],
                              "test_examples": data.pipeline.num_examples(test)}
            out[f"accuracy_{name}"] = metrics["accuracy"]
        return dict(out, method="multitask", tasks=per_task, label_names=None)

    out = loop.fit(overlay(config, {}), train, first_test, first_classes, workdir, config.strategy, info={},
                   model=model, loss_fn=make_loss_fn(names, weights), eval_model=model.clone(task=first),
                   extras=extras)
    if not out.completed:
        return {}
    if jax.process_index() == 0:
        rows = ["| task | weight | ratio | accuracy | f1_macro |", "|---|---|---|---|---|"]
        rows += [f"| {n} | {m['weight']} | {m['ratio']} | {m['accuracy']:.3f} | {m['f1_macro']:.3f} |"
                 for n, m in out.summary["tasks"].items()]
        print("\n".join(rows))
    return {config.strategy: out.summary}
