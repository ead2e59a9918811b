"""Config files (``get_config()`` returning an ml_collections ConfigDict) plus overrides.

``--config configs/x.py[:arg]`` loads a file; ``--config.a.b=value`` overrides one declared
field, parsed to that field's type. Every field is declared, with its default, in
``tljax.defaults``. Unknown keys and bad values fail early with a message that lists what is
allowed, before anything is trained or written.
"""

from __future__ import annotations

import ast
import copy
import difflib
import importlib.util
import math
import os
import re
from typing import Iterable, Sequence

import ml_collections

from tljax.defaults import CHOICES, FRACTIONS, NON_NEGATIVE, POSITIVE, SECTIONS, base_config, data_config, help_text

USAGE = ("usage: python -m tljax.run --config configs/digits_transfer.py --workdir runs/digits "
         "[--config.key=value …]")


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
    if isinstance(current, float):
        try:
            return float(text)  # also 'inf' and 'nan', which validate() then refuses by name
        except ValueError:
            raise ValueError(f"--config.{key}={text!r}: expected a float") from None
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


def _lookup(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return None
        node = node[part]
    return node


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks values a typo could break; every message names the field and what is allowed."""
    for key, allowed in CHOICES.items():
        if key in config and config[key] not in allowed:
            raise ValueError(f"config.{key}={config[key]!r} is not allowed; choose one of {allowed}")
    for key in POSITIVE:
        value = _lookup(config, key)
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ValueError(f"config.{key}={value!r} must be a finite number > 0")
    for key in NON_NEGATIVE:
        value = _lookup(config, key)
        if value is not None and not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"config.{key}={value!r} must be a finite number >= 0")
    for key in FRACTIONS:
        value = _lookup(config, key)
        if value is not None and not 0 <= value <= 1:
            raise ValueError(f"config.{key}={value!r} must be between 0 and 1")
    for table in ("dont_load", "lr_mults", "wd_mults", "schedule"):
        for entry in config[table]:
            pattern = entry if table == "dont_load" else entry[0]
            try:
                re.compile(pattern)
            except (re.error, TypeError) as e:
                raise ValueError(f"config.{table} has a bad regex {pattern!r}: {e}") from None
    for name, declared in SECTIONS.items():
        section = config[name]
        if section and declared:
            unknown = sorted(set(section) - set(declared))
            if unknown:
                raise ValueError(f"config.{name} has no field {unknown[0]!r}; declared: {sorted(declared)}")
    from tljax import strategies  # noqa: PLC0415 (strategies are registered on import)

    for spec in [config.strategy, *config.compare]:
        strategies.get(spec)


def overlay(config, fields, drop: Sequence[str] = tuple(SECTIONS)) -> ml_collections.ConfigDict:
    """``config`` with the ``drop`` fields back at their defaults and ``fields`` on top: the config
    of a run inside a job (the source pre-training, a teacher). A ``data`` in ``fields`` replaces the
    whole data section (undeclared data fields then take their defaults)."""
    defaults = base_config().to_dict()
    merged = {k: (defaults[k] if k in drop else v) for k, v in config.to_dict().items()}
    given = fields.to_dict() if hasattr(fields, "to_dict") else dict(fields or {})
    unknown = sorted(set(given) - set(merged))
    if unknown:
        raise ValueError(f"a run's overrides name unknown config fields {unknown}; known: {sorted(merged)}")
    if "data" in given:
        given["data"] = data_config(given["data"]).to_dict()
    merged.update(given)
    return ml_collections.ConfigDict(merged)


def parse_args(argv: Sequence[str]):
    """``--config FILE --workdir DIR --config.key=value …`` -> ``(config, workdir)``; ``--help`` prints
    every field with its default and meaning, and exits."""
    config_path, workdir, overrides = None, None, []
    argv = list(argv)
    while argv:
        arg = argv.pop(0)
        name, sep, value = arg.partition("=")
        if name in ("--help", "-h"):
            print(f"{USAGE}\n\n{help_text()}")
            raise SystemExit(0)
        if name in ("--config", "--workdir") and not sep:
            if not argv:
                raise ValueError(f"{name} needs a value")
            value = argv.pop(0)
        if name == "--config":
            config_path = value
        elif name == "--workdir":
            workdir = value
        elif name.startswith("--config."):
            if not sep and not argv:
                raise ValueError(f"{name} needs a value")
            overrides.append(arg[len("--config."):] if sep else f"{name[len('--config.'):]}={argv.pop(0)}")
        else:
            raise ValueError(f"unknown argument {arg!r}; {USAGE} (--help lists the fields)")
    if not config_path or not workdir:
        raise ValueError(f"{USAGE} (--help lists the fields)")
    config = apply_overrides(load_file(config_path), overrides)
    validate(config)
    return config, workdir
