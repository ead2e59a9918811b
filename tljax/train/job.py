"""The main job behind ``python -m tljax.train``: which models and strategies to fit.

``run``: optional source pre-training (``config.source``) or pretrained weights
(``config.pretrained``), then ``config.strategy`` and each of ``config.compare``, and a table of
their accuracies. Methods beyond fine-tuning (``tljax.methods``) take the job over when their
config section is set.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict

import jax
import ml_collections
import numpy as np

from tljax import checkpoint, data, evaluate, methods, models, strategies, wordvec
from tljax import params as P
from tljax.train import faults, report
from tljax.train import devices as D
from tljax.train.loop import build_model, fit, init_variables, model_overrides


def run(config, workdir: str) -> Dict[str, Dict[str, Any]]:
    """The main job. Returns ``{strategy: summary}``; writes ``workdir/summary.json`` and more."""
    check_workdir(workdir, config.get("min_free_mb", faults.DEFAULT_MIN_FREE_MB))
    method = methods.dispatch(config)  # distillation, multi-task, domain adaptation
    if method is not None:
        return method(config, workdir)
    pretrained = None
    if config.get("source"):
        pretrained = source_weights(config, os.path.join(workdir, "source"))
    train, test, info = data.load_splits(config.data, config.seed)
    model = None
    if not config.get("source") and config.get("pretrained"):
        model, pretrained = load_pretrained(config, info["num_classes"])
    if config.get("wordvec"):  # static word vectors as the embedding table
        model, pretrained = wordvec.load(config, info["num_classes"], workdir)
    summaries = {config.strategy: fit_strategy(config, train, test, info, workdir, config.strategy,
                                               pretrained, model)["summary"]}
    if summaries[config.strategy] is None:
        return {}
    for spec in config.get("compare", ()):
        folder = os.path.join(workdir, "compare", spec.replace("/", "_").replace(":", "_"))
        summaries[spec] = fit_strategy(config, train, test, info, folder, spec, pretrained, model)["summary"]
    if jax.process_index() == 0:
        print(report.table(summaries))
    return summaries


def source_weights(config, source_dir: str):
    """The source model's variables: trained here once, then read back from its checkpoint.

    A finished source run (``summary.json`` at ``config.source.num_steps``) is reused without
    compiling anything, after its parameter shapes are checked against the source model's
    (a workdir holding another model is refused, nothing deleted); an unfinished one resumes.
    """
    src = source_config(config)
    train, test, info = data.load_splits(src.data, src.seed)
    summary_path = os.path.join(source_dir, "summary.json")
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            finished = json.load(f).get("num_steps") == src.num_steps
        if finished:
            weights = checkpoint.load_params(os.path.join(source_dir, "ckpt"), src.num_steps)
            model = build_model(src, info["num_classes"])
            example = data.pipeline.train_dataset(train, src.batch_size, src.seed)[0]
            expected = jax.eval_shape(lambda: init_variables(model, example, src.seed))["params"]
            shapes = lambda tree: {k: list(np.shape(v)) for k, v in P.flatten(tree).items()}  # noqa: E731
            checkpoint.check_meta({"param_shapes": shapes(weights["params"])},
                                  {"param_shapes": shapes(expected)}, os.path.join(source_dir, "ckpt"))
            return weights
    return D.to_host(fit(src, train, test, info["num_classes"], source_dir, "scratch", info=info)["variables"])


def source_config(config) -> ml_collections.ConfigDict:
    """The target config with ``config.source``'s fields on top: the pre-training run."""
    target_only = ("source", "compare", "stop_at_step", "feature_cache", "cv_folds", "bench")
    merged = {k: v for k, v in config.to_dict().items() if k not in target_only}
    merged.update(config.source.to_dict())
    return ml_collections.ConfigDict(merged)


def load_pretrained(config, num_classes: int):
    """``(model, variables)`` of ``config.pretrained`` (registry name or path) with a fresh head.

    With ``config.pretrained_optional``, registry weights missing from the cache give
    ``(None, None)`` and a warning (train from scratch) instead of a download.
    """
    from tljax import pretrained as registry  # noqa: PLC0415 (heavy: converters)

    name = config.pretrained
    weights = registry.REGISTRY.get(name)
    if weights and config.get("pretrained_optional") and not (registry.cache_dir() / weights.cache_name).exists():
        print(f"warning: pretrained weights {name!r} are not in {registry.cache_dir()}; training from scratch")
        return None, None
    model, variables = registry.load(name, num_classes, **model_overrides(config))
    return model, jax.device_get(variables)


def fit_strategy(config, train, test, info, workdir: str, spec: str, pretrained, model=None):
    """``fit``, or the cached-feature linear probe where ``config.feature_cache`` allows it."""
    cacheable = (strategies.get(spec).name == "linear_probe" and pretrained is not None
                 and not config.get("augment") and not config.get("frozen_bn_train", False))
    if config.get("feature_cache") and cacheable:
        return fit_cached_probe(config, train, test, info, workdir, pretrained, model)
    return fit(config, train, test, info["num_classes"], workdir, spec, pretrained, info=info, model=model)


def fit_cached_probe(config, train, test, info, workdir: str, pretrained, model=None):
    """Linear probe on features computed once: the head trains on them, plus a ridge read-out
    and optional k-fold CV (``config.cv_folds``) on the same features."""
    num_classes, mesh = info["num_classes"], D.make_mesh(config.get("mesh"))
    model = model if model is not None else build_model(config, num_classes)
    backbone = {"params": {"backbone": pretrained["params"]["backbone"]},
                "batch_stats": pretrained.get("batch_stats") or {}}
    features_model = model.clone(num_classes=None)
    _, eval_pre = data.augment.make_preprocess(config.get("augment"))
    start = time.perf_counter()
    train_x, train_y = evaluate.extract_features(features_model, backbone, train, config.eval_batch_size, mesh,
                                                 eval_pre, info.get("buckets", ()))
    test_x, test_y = evaluate.extract_features(features_model, backbone, test, config.eval_batch_size, mesh,
                                               eval_pre, info.get("buckets", ()))
    feature_seconds = time.perf_counter() - start
    head = models.Classifier(models.Identity(), num_classes)
    out = fit(config, {"features": train_x, "label": train_y}, {"features": test_x, "label": test_y}, num_classes,
              workdir, "full_ft", None, model=head)
    if out["summary"] is None:
        return out
    summary = out["summary"]
    ridge = evaluate.ridge_predict(train_x, train_y, test_x, num_classes, config.get("ridge_l2", 1.0))
    summary.update(strategy="linear_probe", feature_cache=True, feature_seconds=feature_seconds,
                   total_params=P.count(backbone["params"]) + summary["trainable_params"],
                   ridge_accuracy=float(np.mean(ridge == test_y)),
                   label_names=info.get("label_names"), skipped_examples=info.get("skipped_examples", 0))
    if config.get("cv_folds"):
        summary.update(evaluate.cross_validate(train_x, train_y, num_classes, config.cv_folds, config.seed,
                                               config.get("ridge_l2", 1.0)))
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    params = {**backbone["params"], "head": out["variables"]["params"]["head"]}
    return {"summary": summary, "variables": {"params": params, "batch_stats": backbone["batch_stats"]}}


def check_workdir(workdir: str, min_free_mb: float = faults.DEFAULT_MIN_FREE_MB) -> None:
    """Writable, with ``min_free_mb`` free on its disk: fails before anything is trained."""
    why = faults.unwritable(workdir)
    if why:
        raise SystemExit(f"workdir {workdir!r} is not writable ({why}); pick another --workdir")
    faults.check_free_space(workdir, min_free_mb)
