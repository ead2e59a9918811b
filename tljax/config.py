"""Config files (``get_config()`` returning an ml_collections ConfigDict) plus overrides.

``--config configs/x.py[:arg]`` loads a file; ``--config.a.b=value`` overrides one existing
field, parsed to that field's type. Unknown keys and bad values fail early with a message
that lists what is allowed, before anything is trained or written.
"""

from __future__ import annotations

import ast
import copy
import difflib
import importlib.util
import os
import re
from typing import Iterable, Sequence

import ml_collections

# field -> allowed values, checked by ``validate`` (strategies are checked by tljax.strategies)
CHOICES = {
    "optimizer": ("adamw", "sgd"),
    "lr_schedule": ("cosine", "linear", "constant"),
    "dtype": ("float32", "bfloat16"),  # compute dtype; parameters and optimizer state stay float32
    "nan_policy": ("stop", "skip"),
    "host_malloc": ("auto", "jemalloc", "keep", "default"),  # tljax.train.host_memory
}
POSITIVE = ("batch_size", "num_steps", "lr", "eval_batch_size", "grad_accum")
NON_NEGATIVE = ("wd", "warmup_steps", "ckpt_every", "log_every", "min_free_mb")


def load_file(path: str) -> ml_collections.ConfigDict:
    """Runs ``get_config(arg)`` from ``path[:arg]``."""
    path, _, arg = path.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found (run from the repository root, "
                                "e.g. --config configs/digits_transfer.py)")
    spec = importlib.util.spec_from_file_location(f"tljax_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path!r} defines no get_config()")
    return module.get_config(arg) if arg else module.get_config()


def _parse_like(current, text: str, key: str):
    """Parses ``text`` to the type of the current value of ``key``."""
    if isinstance(current, str) or current is None:
        if current is None:
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return text
        return text
    if isinstance(current, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"--config.{key}={text!r}: expected a bool (true/false)")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ValueError(f"--config.{key}={text!r}: expected a {type(current).__name__}") from None
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
        return type(current)(value)
    if not isinstance(value, type(current)):
        raise ValueError(f"--config.{key}={text!r}: expected a {type(current).__name__}, got {type(value).__name__}")
    return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
    """Applies ``a.b=value`` strings; unknown keys name the nearest existing one."""
    config = copy.deepcopy(config)  # keeps FieldReferences between fields
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not of the form --config.key=value")
        node, parts = config, key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                where = ".".join(parts[:depth]) or "config"
                known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                near = difflib.get_close_matches(part, known, n=1)
                hint = f" Did you mean {near[0]!r}?" if near else ""
                raise KeyError(f"unknown config key {key!r}: {where} has no field {part!r}.{hint} "
                               f"Known fields: {known}")
            if depth < len(parts) - 1:
                node = node[part]
        current = node[parts[-1]]
        with node.ignore_type():
            node[parts[-1]] = _parse_like(current, text, key)
    return config


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks values a typo could break; every message lists the allowed values."""
    for key, allowed in CHOICES.items():
        if key in config and config[key] not in allowed:
            raise ValueError(f"config.{key}={config[key]!r} is not allowed; choose one of {allowed}")
    for key in POSITIVE:
        if key in config and not config[key] > 0:
            raise ValueError(f"config.{key}={config[key]!r} must be > 0")
    for key in NON_NEGATIVE:
        if key in config and config[key] < 0:
            raise ValueError(f"config.{key}={config[key]!r} must be >= 0")
    for pattern in config.get("dont_load", ()):
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"config.dont_load has a bad regex {pattern!r}: {e}") from None
    from tljax import strategies  # noqa: PLC0415 (strategies are registered on import)

    for spec in [config.strategy, *config.get("compare", ())]:
        strategies.get(spec)


def parse_args(argv: Sequence[str]):
    """``--config FILE --workdir DIR --config.key=value …`` -> ``(config, workdir)``."""
    config_path, workdir, overrides = None, None, []
    argv = list(argv)
    while argv:
        arg = argv.pop(0)
        name, sep, value = arg.partition("=")
        if name in ("--config", "--workdir") and not sep:
            if not argv:
                raise ValueError(f"{name} needs a value")
            value = argv.pop(0)
        if name == "--config":
            config_path = value
        elif name == "--workdir":
            workdir = value
        elif name.startswith("--config."):
            overrides.append(arg[len("--config."):] if sep else f"{name[len('--config.'):]}={argv.pop(0)}")
        else:
            raise ValueError(f"unknown argument {arg!r}; usage: --config FILE --workdir DIR [--config.key=value …]")
    if not config_path or not workdir:
        raise ValueError("usage: python -m tljax.train --config configs/digits_transfer.py --workdir runs/digits "
                         "[--config.key=value …]")
    config = apply_overrides(load_file(config_path), overrides)
    validate(config)
    return config, workdir
