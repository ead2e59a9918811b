"""``tljax.finetune``: from weights and data to a ``Finetuned`` model in one call.

``finetune(weights=None, data=None, *, strategy="full_ft", workdir=None, config=None, **overrides)``

- ``weights``: a registry name, a checkpoint file, a Hugging Face / timm folder or a folder
  ``Finetuned.save`` wrote (``tljax.pretrained.load``); None trains ``config.arch`` from random init.
- ``data``: a data section as ``config.data`` (``dict(source="digits", classes=(0, 1, 2))``);
  or ``(x, y)``, where ``x`` is image arrays ``(n, H, W[, C])`` (uint8, or float in [0, 1]),
  image file paths, or texts (tokenised with the weights' ``tokenizer.json``, else
  ``data.tokenizer``), and ``y`` class ids or label names; or ``dict(train=(x, y), test=(x, y))``
  (also ``val=``). Without a test split, ``data.test_fraction`` of ``(x, y)`` is held out; with
  ``data.val_fraction`` a validation split too (``loop.fit`` then picks the best checkpoint).
- ``config``: a config file (``"configs/x.py[:arg]"``) or ConfigDict; default ``base_config()``.
- ``overrides``: any config field by keyword, ``lr=1e-3``, ``num_steps=50``; nested fields with a
  double underscore, ``data__image_size=96``, ``augment__kind="rrc"`` (or dotted keys,
  ``**{"data.image_size": 96}``); a dict sets a whole section, ``model=dict(widths=(4, 8, 8))``.

It trains one strategy through ``tljax.train.loop.fit`` in ``workdir`` (default: a new temporary
folder; the same workdir again resumes) and returns a ``Finetuned`` (``tljax.export``) that
predicts with the training preprocessing and saves itself. The weights' ``Preprocess`` fills what
the config leaves open (``augment.normalize`` when no augment section is set, ``data.image_size``
unless given); a config that contradicts it trains as configured and warns once, naming both.
"""

from __future__ import annotations

import copy
import difflib
import os
import tempfile
from typing import Any, Dict, Mapping, Optional, Sequence, Set, Tuple

import jax
import ml_collections
import numpy as np

from tljax import config as C
from tljax import models
from tljax import data as D
from tljax import pretrained
from tljax.data import preprocess as PP
from tljax.data import text_files
from tljax.defaults import SECTIONS, base_config, data_config, section
from tljax.export import Finetuned, load_finetuned
from tljax.train import devices, loop, report, workdir as wd
from tljax.train import state as T

RUNTIME_KWARGS = ("dtype", "remat", "cpu_kernels")  # how a model runs, not what it is: not saved
METHODS = ("source", "distill", "tasks", "adapt", "wordvec")  # jobs of python -m tljax.run


def set_field(cfg: ml_collections.ConfigDict, key: str, value) -> None:
    """Sets the dotted field ``key``; an undeclared one fails naming the nearest declared field."""
    node, parts = cfg, key.split(".")
    for depth, part in enumerate(parts):
        known = sorted(node.keys())
        if part not in node:
            near = difflib.get_close_matches(part, known, n=1)
            raise KeyError(f"unknown config field {key!r}: {'.'.join(parts[:depth]) or 'config'} has no {part!r}"
                           + (f"; did you mean {near[0]!r}?" if near else "") + f" Known: {known}")
        if depth < len(parts) - 1:
            if node[part] is None and depth == 0 and part in SECTIONS:
                node[part] = section(part)
            node = node[part]
    last, current = parts[-1], node[parts[-1]]
    if isinstance(value, Mapping) and key in SECTIONS:
        value = section(key, **value)
    elif isinstance(value, Mapping) and key == "data":
        value = data_config(value)
    elif isinstance(value, Mapping):
        value = ml_collections.ConfigDict(dict(value))
    elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    elif current is not None and not isinstance(value, type(current)) and not isinstance(
            current, ml_collections.ConfigDict):
        raise ValueError(f"config.{key}={value!r}: expected a {type(current).__name__}")
    with node.ignore_type():
        node[last] = value


def make_config(config, overrides: Mapping[str, Any]) -> Tuple[ml_collections.ConfigDict, Set[str]]:
    """``(config, the dotted keys the caller set)`` from a file, a ConfigDict or the base config."""
    if config is None:
        cfg = base_config()
    elif isinstance(config, (str, os.PathLike)):
        cfg = C.load_file(os.fspath(config))
    elif isinstance(config, ml_collections.ConfigDict):
        cfg = copy.deepcopy(config)
    else:
        raise TypeError(f"config must be a config file path or a ConfigDict, not {type(config).__name__}")
    explicit = set()
    for key, value in overrides.items():
        dotted = key.replace("__", ".")
        set_field(cfg, dotted, value)
        explicit.add(dotted)
        explicit.update(f"{dotted}.{k}" for k in (value if isinstance(value, Mapping) else ()))
    return cfg, explicit


def label_ids(splits: Dict[str, Tuple[Any, Any]]) -> Tuple[Dict[str, np.ndarray], list]:
    """Each split's labels as ids, and the label names (sorted names, or ``'0' … 'k-1'`` for ids)."""
    train = list(np.asarray(splits["train"][1]).tolist())
    if train and isinstance(train[0], str):
        names = list(text_files.infer_label_names([str(v) for v in train]))  # numeric order when all are ints
        index = {n: i for i, n in enumerate(names)}
        ids = {}
        for name, (_, y) in splits.items():
            unknown = sorted({str(v) for v in np.asarray(y).tolist()} - set(index))
            if unknown:
                raise ValueError(f"data: {name} labels {unknown[:5]} do not occur in the training labels {names}")
            ids[name] = np.asarray([index[str(v)] for v in np.asarray(y).tolist()], np.int32)
        return ids, names
    ids = {name: np.asarray(y) for name, (_, y) in splits.items()}
    for name, y in ids.items():
        if y.dtype.kind not in "iu" or (y.size and y.min() < 0):
            raise ValueError(f"data: {name} labels must be class ids >= 0 or label names (str), got {y.dtype}")
    return {k: v.astype(np.int32) for k, v in ids.items()}, [str(i) for i in range(max(int(y.max()) for y in
                                                                                         ids.values()) + 1)]


def to_split(x, y: np.ndarray, cfg, tokenizer, name: str):
    """One split from image arrays, image paths or texts; ``kind`` is ``image`` or ``text``."""
    if PP.is_image_paths(x):
        from tljax.data import image_folder  # noqa: PLC0415

        keep, bad = image_folder.readable([os.fspath(p) for p in x], desc=f"scan {name}")
        if not keep:
            raise ValueError(f"data: none of the {len(x)} {name} image paths is a readable image (e.g. {x[0]!r})")
        return image_folder.ImageFolder([os.fspath(x[i]) for i in keep], y[keep], int(cfg.data.image_size)), "image"
    if isinstance(x, (list, tuple)) and x and all(isinstance(t, str) for t in x):
        if tokenizer is None:
            raise ValueError("data: texts need a tokenizer; pass weights=<a folder with tokenizer.json> or "
                             "data__tokenizer=<tokenizer.json or its folder>")
        split = D.text.tokenize(tokenizer, list(x), int(cfg.data.max_len), desc=f"tokenize {name}")
        return {**split, "label": y}, "text"
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.dtype.kind not in "uf" or len(x) != len(y):
        raise ValueError(f"data: {name} inputs must be images (n, H, W[, C]) as uint8 or float in [0, 1] with one "
                         f"label each, image file paths, or texts; got {type(x).__name__} {x.shape} {x.dtype} and "
                         f"{len(y)} labels")
    return {"image": x if x.dtype == np.uint8 else x.astype(np.float32), "label": y}, "image"


def pick(x, indices):
    """Examples ``indices`` of a list (paths, texts) or an array."""
    return [x[i] for i in indices] if isinstance(x, (list, tuple)) else np.asarray(x)[indices]


def in_memory_splits(data, cfg, tokenizer):
    """``(train, test, info, kind)`` from ``(x, y)`` or ``dict(train=…, test=…, val=…)``; a missing
    test split is a seeded ``data.test_fraction`` of the examples, a missing validation split
    (``info["val"]``) a stratified ``data.val_fraction`` of the rest, as ``load_splits`` holds it out."""
    splits = dict(data) if isinstance(data, Mapping) else {"train": tuple(data)}
    unknown = sorted(set(splits) - {"train", "val", "test"})
    if unknown or any(not isinstance(v, (tuple, list)) or len(v) != 2 for v in splits.values()):
        raise ValueError(f"data: expected (x, y) or dict(train=(x, y), test=(x, y), val=(x, y)); got keys "
                         f"{sorted(splits)}")
    ids, names = label_ids(splits)
    xs = {k: v[0] for k, v in splits.items()}
    if "test" not in xs:
        order = np.random.default_rng([cfg.seed, 13]).permutation(len(ids["train"]))
        n = int(round(len(order) * cfg.data.test_fraction))
        if not 0 < n < len(order):
            raise ValueError(f"data: holding out data.test_fraction={cfg.data.test_fraction} of {len(order)} "
                             "examples leaves an empty split; pass dict(train=(x, y), test=(x, y))")
        xs["test"], ids["test"] = pick(xs["train"], order[:n]), ids["train"][order[:n]]
        xs["train"], ids["train"] = pick(xs["train"], order[n:]), ids["train"][order[n:]]
    built = {name: to_split(xs[name], ids[name], cfg, tokenizer, name) for name in xs}
    train, kind = built["train"]
    info = {"num_classes": len(names), "label_names": names, "val": built["val"][0] if "val" in built else None}
    if info["val"] is None and cfg.data.val_fraction:
        train, info["val"] = D.stratified_split(train, cfg.data.val_fraction, cfg.seed, names)
    if kind == "text":
        info["buckets"] = tuple(cfg.data.buckets) or D.text.default_buckets(int(cfg.data.max_len))
    return train, built["test"][0], info, kind


def tokenizer_path(weights, cfg) -> str:
    """``data.tokenizer``, else the ``tokenizer.json`` saved with the weights (folder or Hub name), else ''."""
    if cfg.data.tokenizer:
        return cfg.data.tokenizer
    return pretrained.tokenizer_file(weights) if weights is not None else ""


def follow_weights(cfg, expected: Optional[PP.Preprocess], explicit: Set[str]) -> None:
    """What the config leaves open follows the weights' ``Preprocess``: the normalisation when no
    augment section is set, ``data.image_size`` unless the caller gave it."""
    if expected is None:
        return
    if cfg.augment is None and PP.normalize_kind(expected):
        cfg.augment = section("augment", normalize=PP.normalize_kind(expected))
    if "data.image_size" not in explicit and isinstance(expected.input_size, int):
        cfg.data.image_size = expected.input_size


def finetune(weights=None, data=None, *, strategy: str = "full_ft", workdir: Optional[str] = None, config=None,
             **overrides) -> Finetuned:
    """Trains and returns a ``Finetuned``; see the module docstring."""
    cfg, explicit = make_config(config, overrides)
    methods = [m for m in METHODS if cfg[m]]
    if methods:
        raise ValueError(f"config.{methods[0]} selects a method of python -m tljax.run; tljax.finetune trains "
                         "one model with one strategy")
    cfg.strategy, cfg.compare, cfg.pretrained = strategy, (), os.fspath(weights) if weights is not None else ""
    in_memory = data is not None and not (isinstance(data, Mapping) and "train" not in data) \
        and not isinstance(data, ml_collections.ConfigDict)
    if data is not None and not in_memory:
        given = data.to_dict() if hasattr(data, "to_dict") else dict(data)
        cfg.data = data_config({**cfg.data.to_dict(), **given})
        explicit.update(f"data.{k}" for k in given)
    expected = pretrained.preprocess_of(weights) if weights is not None else None
    follow_weights(cfg, expected, explicit)
    with cfg.data.ignore_type():
        cfg.data.tokenizer = tokenizer_path(weights, cfg)
    C.validate(cfg)
    devices.use_compilation_cache(cfg.compilation_cache)

    tokenizer = D.text.load_tokenizer(cfg.data.tokenizer, int(cfg.data.max_len)) if cfg.data.tokenizer else None
    if in_memory:
        train, test, info, kind = in_memory_splits(data, cfg, tokenizer)
    else:
        train, test, info = D.load_splits(cfg.data, cfg.seed)  # info["val"]: the validation split or None
        kind = "image" if "image" in D.pipeline.read(train, np.arange(1)) else "text"
    num_classes = info["num_classes"]

    trained_pre = None
    if kind == "image":
        if cfg.augment is None:
            cfg.augment = section("augment")  # uint8 pixels to [0, 1], as predict does
        h, w, channels = D.pipeline.read(train, np.arange(1))["image"].shape[1:]
        if cfg.augment.normalize != "none" and channels != 3:
            raise ValueError(f"config.augment.normalize={cfg.augment.normalize!r} is for RGB images; the data has "
                             f"{channels} channel(s)")
        base = PP.from_normalize(cfg.augment.normalize, channels, h if h == w else (h, w))
        if in_memory and expected is not None and not PP.is_image_paths(data_x(data)):  # arrays cut as weights say
            base = PP.Preprocess(base.mean, base.std, base.input_size, expected.crop_fraction, expected.interpolation,
                                 base.channel_order)
        trained_pre = base
        for message in (PP.mismatches(expected, cfg.augment.normalize, (h, w), f"weights {os.fspath(weights)!r}")
                        if expected is not None else []):
            PP.warn_once(message)
    elif tokenizer is None:
        raise ValueError("text data needs a tokenizer: pass weights=<a folder with tokenizer.json> or "
                         "data__tokenizer=<tokenizer.json or its folder>")

    cpu_kernels = devices.cpu_kernels_on(cfg.cpu_kernels, devices.make_mesh(cfg.mesh))
    model, init, kwargs = None, None, cfg.model.to_dict()
    if weights is not None:
        # the backbone only: fit initialises the new head and merges (config.dont_load), one init fewer
        loaded = pretrained.load_with_preprocess(weights, None, **T.model_overrides(cfg, cpu_kernels))
        cfg.arch, init = loaded.arch, jax.device_get(loaded.variables)
        model = models.create(loaded.arch, num_classes, **loaded.model_kwargs)
        kwargs = {k: v for k, v in loaded.model_kwargs.items() if k not in RUNTIME_KWARGS}

    workdir = workdir or tempfile.mkdtemp(prefix="tljax-finetune-")
    wd.check(workdir, cfg.min_free_mb)
    lock = wd.Lock(workdir).acquire()
    try:
        report.write_json(os.path.join(workdir, "config.json"), cfg.to_dict())
        result = loop.fit(cfg, train, test, num_classes, workdir, strategy, init, info=info, model=model)
    finally:
        lock.release()
    if not result.completed:
        raise RuntimeError(f"training stopped at config.stop_at_step={cfg.stop_at_step} of {cfg.num_steps}; call "
                           f"finetune again with workdir={workdir!r} to resume")
    names = list(info.get("label_names") or [str(i) for i in range(num_classes)])
    return Finetuned(cfg.arch, kwargs, names, result.variables, trained_pre,
                     int(cfg.data.max_len) if kind == "text" else 0, tokenizer if kind == "text" else None,
                     dict(result.summary))


def data_x(data) -> Sequence:
    """The training inputs of in-memory ``data``."""
    return (data["train"] if isinstance(data, Mapping) else data)[0]


__all__ = ["finetune", "load_finetuned", "Finetuned", "make_config", "set_field"]
