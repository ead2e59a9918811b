"""The linear probe on cached features: the frozen backbone's features are computed once, the
head trains on them (the same optimisation problem as a linear probe, at a fraction of the
cost), plus a closed-form ridge read-out and optional stratified k-fold CV on the same features.
"""

from __future__ import annotations

import time

import numpy as np

from tljax import data, models
from tljax import params as P
from tljax.train import devices as D
from tljax.train import evaluate, loop
from tljax.train import state as T


def fit_cached_probe(config, train, test, info, workdir: str, pretrained, model=None) -> loop.FitResult:
    num_classes, mesh = info["num_classes"], D.make_mesh(config.mesh)
    model = model if model is not None else T.build_model(config, num_classes,
                                                          D.cpu_kernels_on(config.cpu_kernels, mesh))
    backbone = {"params": {"backbone": pretrained["params"]["backbone"]},
                "batch_stats": pretrained.get("batch_stats") or {}}
    features_model = model.clone(num_classes=None)
    _, eval_pre = data.augment.make_preprocess(config.augment)
    start = time.perf_counter()
    buckets = info.get("buckets", ())
    train_x, train_y = evaluate.extract_features(features_model, backbone, train, config.eval_batch_size, mesh,
                                                 eval_pre, buckets)
    test_x, test_y = evaluate.extract_features(features_model, backbone, test, config.eval_batch_size, mesh,
                                               eval_pre, buckets)
    feature_seconds = time.perf_counter() - start

    def extras(variables, summary):
        ridge = evaluate.ridge_predict(train_x, train_y, test_x, num_classes, config.ridge_l2)
        out = dict(strategy="linear_probe", feature_cache=True, feature_seconds=feature_seconds,
                   total_params=P.count(backbone["params"]) + P.count(variables["params"]),
                   ridge_accuracy=float(np.mean(ridge == test_y)),
                   label_names=info.get("label_names"), skipped_examples=info.get("skipped_examples", 0))
        if config.cv_folds:
            out.update(evaluate.cross_validate(train_x, train_y, num_classes, config.cv_folds, config.seed,
                                               config.ridge_l2))
        return out

    head = models.Classifier(models.Identity(), num_classes)
    out = loop.fit(config, {"features": train_x, "label": train_y}, {"features": test_x, "label": test_y},
                   num_classes, workdir, "full_ft", None, model=head, extras=extras)
    if not out.completed:
        return out
    params = {**backbone["params"], "head": out.variables["params"]["head"]}
    return loop.FitResult(out.summary, {"params": params, "batch_stats": backbone["batch_stats"]}, True)
