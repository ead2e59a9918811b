"""Fine-tuning, the default method: weights from a source run or a checkpoint, then
``config.strategy`` and each of ``config.compare`` from the same weights, and a table.

``config.source`` pre-trains here first (reused when finished); ``config.pretrained`` loads a
registry name or path; ``config.wordvec`` puts word vectors in the embedding table.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict

import jax
import numpy as np

from tljax import checkpoint, data, strategies, wordvec
from tljax import params as P
from tljax.config import overlay
from tljax.methods import probe
from tljax.train import devices as D
from tljax.train import loop, report
from tljax.train import state as T

TARGET_ONLY = ("source", "compare", "stop_at_step", "feature_cache", "cv_folds", "bench")


def run(config, workdir: str) -> Dict[str, Dict[str, Any]]:
    """``{strategy: summary}`` of every strategy run; ``{}`` when a run stopped early (resumable)."""
    train, test, info = data.load_splits(config.data, config.seed)
    model, pretrained = None, None
    if config.pretrained and not config.source:
        model, pretrained = load_pretrained(config, info["num_classes"])
    if config.wordvec:  # static word vectors as the embedding table
        model, pretrained = wordvec.load(config, info["num_classes"], workdir)
    check_before_training(config, train, info, model)
    if config.source:
        pretrained = source_weights(config, os.path.join(workdir, "source"))
    summaries, specs, start = {}, (config.strategy, *config.compare), time.perf_counter()
    for i, spec in enumerate(specs):
        folder = workdir if spec == config.strategy else os.path.join(
            workdir, "compare", spec.replace("/", "_").replace(":", "_"))
        report.say(job_progress(i, len(specs), spec, time.perf_counter() - start))
        out = fit_strategy(config, train, test, info, folder, spec, pretrained, model)
        if not out.completed:
            return {}
        summaries[spec] = out.summary
    if jax.process_index() == 0:
        print(report.table(summaries))
    return summaries


def job_progress(i: int, n: int, name: str, elapsed: float) -> str:
    """``run 2 of 3: linear_probe (elapsed 1:05, about 1:05 left)``: the ETA assumes equal runs."""
    clock = lambda seconds: f"{int(seconds // 60)}:{int(seconds % 60):02d}"  # noqa: E731
    left = f", about {clock(elapsed / i * (n - i))} left" if i else ""
    return f"run {i + 1} of {n}: {name} (elapsed {clock(elapsed)}{left})"


def check_before_training(config, train, info, model=None) -> None:
    """What can be known from the data and the model's shapes fails here, before any training."""
    T.check_batch_fits(data.pipeline.num_examples(train), config.batch_size)
    cpu_kernels = D.cpu_kernels_on(config.cpu_kernels, D.make_mesh(config.mesh))
    model = model if model is not None else T.build_model(config, info["num_classes"], cpu_kernels)
    example = data.pipeline.train_dataset(train, config.batch_size, config.seed)[0]
    _, eval_pre = data.augment.make_preprocess(config.augment)
    T.check_plan(config, model, eval_pre(example) if eval_pre else example, (config.strategy, *config.compare))


def source_config(config):
    """The target config with ``config.source``'s fields on top: the pre-training run."""
    return overlay(config, config.source, drop=TARGET_ONLY)


def source_weights(config, source_dir: str):
    """The source model's variables: trained here once, then read back from its checkpoint.

    A finished source run (``summary.json`` at ``config.source.num_steps``) is reused without
    compiling anything, after its parameter shapes are checked against the source model's
    (a workdir holding another model is refused, nothing deleted); an unfinished one resumes.
    """
    src = source_config(config)
    train, test, info = data.load_splits(src.data, src.seed)
    finished = report.read_json(os.path.join(source_dir, report.SUMMARY)) or {}
    if finished.get("num_steps") == src.num_steps:
        weights = checkpoint.load_params(os.path.join(source_dir, "ckpt"), src.num_steps)
        example = data.pipeline.train_dataset(train, src.batch_size, src.seed)[0]
        expected = T.param_shapes(T.build_model(src, info["num_classes"]), example, src.seed)
        saved = {k: list(np.shape(v)) for k, v in P.flatten(weights["params"]).items()}
        checkpoint.check_meta({"param_shapes": saved}, {"param_shapes": expected}, os.path.join(source_dir, "ckpt"))
        return weights
    return loop.fit(src, train, test, info["num_classes"], source_dir, "scratch", info=info).variables


def load_pretrained(config, num_classes: int):
    """``(model, variables)`` of ``config.pretrained`` (registry name or path) with a fresh head.

    With ``config.pretrained_optional``, registry weights missing from the cache give
    ``(None, None)`` and a warning (train from scratch) instead of a download.
    """
    from tljax import pretrained as registry  # noqa: PLC0415 (heavy: converters)

    name = config.pretrained
    weights = registry.REGISTRY.get(name)
    if weights and config.pretrained_optional and not (registry.cache_dir() / weights.cache_name).exists():
        print(f"warning: pretrained weights {name!r} are not in {registry.cache_dir()}; training from scratch")
        return None, None
    from tljax.data import preprocess  # noqa: PLC0415

    cpu_kernels = D.cpu_kernels_on(config.cpu_kernels, D.make_mesh(config.mesh))
    loaded = registry.load_with_preprocess(name, num_classes, **T.model_overrides(config, cpu_kernels))
    if loaded.preprocess is not None and config.data.source != "text_tsv" and config.data.source != "text_csv":
        normalize = config.augment.normalize if config.augment else "none"
        size = config.data.image_size if config.data.source == "image_folder" else loaded.preprocess.size_hw
        for message in preprocess.mismatches(loaded.preprocess, normalize, size, f"weights {name!r}"):
            preprocess.warn_once(message)
    return loaded.model, jax.device_get(loaded.variables)


def fit_strategy(config, train, test, info, workdir: str, spec: str, pretrained, model=None) -> loop.FitResult:
    """``loop.fit``, or the cached-feature linear probe where ``config.feature_cache`` allows it."""
    cacheable = (strategies.get(spec).name == "linear_probe" and pretrained is not None
                 and not config.augment and not config.frozen_bn_train)
    if config.feature_cache and cacheable:
        return probe.fit_cached_probe(config, train, test, info, workdir, pretrained, model)
    return loop.fit(config, train, test, info["num_classes"], workdir, spec, pretrained, info=info, model=model)
