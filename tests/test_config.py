import ast
import os

import pytest

from tljax.config import apply_overrides, load_file, parse_args, validate

from conftest import ROOT

CONFIG = os.path.join(ROOT, "configs", "digits_transfer.py")


def test_overrides_are_typed_and_follow_references():
    config = apply_overrides(load_file(CONFIG), ["lr=0.01", "num_steps=7", "target_labels_per_class=3",
                                                 "compare=('scratch',)", "frozen_bn_train=true"])
    assert config.lr == 0.01 and config.num_steps == 7 and config.compare == ("scratch",)
    assert config.frozen_bn_train is True
    assert config.data.labels_per_class == 3  # data follows the documented top-level field


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(KeyError, match=r"no field 'lrr'.*Did you mean 'lr'"):
        apply_overrides(load_file(CONFIG), ["lrr=0.1"])
    with pytest.raises(KeyError, match=r"source has no field 'nope'"):
        apply_overrides(load_file(CONFIG), ["source.nope=1"])


def test_bad_values_list_allowed_ones():
    with pytest.raises(ValueError, match=r"optimizer='adam'.*'adamw', 'sgd'"):
        validate(apply_overrides(load_file(CONFIG), ["optimizer=adam"]))
    with pytest.raises(ValueError, match=r"unknown strategy 'linear'.*allowed: .*'linear_probe'"):
        validate(apply_overrides(load_file(CONFIG), ["strategy=linear"]))
    with pytest.raises(ValueError, match="bad regex"):
        validate(apply_overrides(load_file(CONFIG), ["strategy=freeze:(unclosed"]))
    with pytest.raises(ValueError, match="expected a int"):
        apply_overrides(load_file(CONFIG), ["num_steps=many"])
    with pytest.raises(ValueError, match="num_steps=0 must be a finite number > 0"):
        validate(apply_overrides(load_file(CONFIG), ["num_steps=0"]))


def test_parse_args_and_cli_error(tmp_path):
    config, workdir = parse_args(["--config", CONFIG, "--workdir", str(tmp_path), "--config.seed=3"])
    assert config.seed == 3 and workdir == str(tmp_path)
    with pytest.raises(ValueError, match="usage"):
        parse_args(["--config", CONFIG])


CONFIG_FILES = sorted(f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py"))


def knob_values(key, current):
    """Override texts for a declared field: every allowed choice, else its current value written out."""
    from tljax.defaults import CHOICES

    if key in CHOICES:
        return list(CHOICES[key])
    return [current if isinstance(current, str) else repr(current)]


def lookup(config, key):
    for part in key.split("."):
        config = config[part]
    return config


@pytest.mark.parametrize("config_file", CONFIG_FILES)
def test_every_declared_knob_works_on_every_config(config_file):
    from tljax.defaults import FIELDS

    base = load_file(os.path.join(ROOT, "configs", config_file))
    for key, default, _ in FIELDS:
        if isinstance(default, dict):
            continue  # free-form sections (model, distributed): their keys are the model's / the cluster's
        current = lookup(base, key)
        for text in knob_values(key, current):
            config = apply_overrides(base, [f"{key}={text}"])
            validate(config)
            assert lookup(config, key) == (text if isinstance(current, str) else ast.literal_eval(text)), key


def test_library_code_reads_no_undeclared_defaults():
    """``config.get(key, default)`` would hide a default no config declares; fields are read directly.
    (models/, convert/ and pretrained/ never see a run's config: their ``config`` is a checkpoint's.)"""
    import re

    offenders = []
    for folder, _, files in os.walk(os.path.join(ROOT, "tljax")):
        if os.path.basename(folder) in ("models", "convert", "pretrained", "xla_cpu"):
            continue
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(folder, name)).read()
                offenders += [f"{name}: {m}" for m in re.findall(r"\b(?:config|cfg)(?:\.\w+)*\.get\([^)]*\)", text)]
    assert not offenders, offenders


def test_help_lists_every_field_with_its_comment(capsys):
    from tljax.defaults import FIELDS

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for key, _, what in FIELDS:
        assert key in out and what[:30] in out


def test_method_sections_reject_undeclared_fields():
    config = load_file(os.path.join(ROOT, "configs", "distill_digits.py"))
    with config.ignore_type():
        config.distill.alhpa = 0.1
    with pytest.raises(ValueError, match="config.distill has no field 'alhpa'"):
        validate(config)


def test_nested_data_sections_take_declared_defaults_and_refuse_typos():
    from tljax.defaults import data_config

    assert data_config({"source": "digits", "classes": (0, 1)}).num_threads == 4
    with pytest.raises(KeyError, match="unknown data field 'clases'.*did you mean 'classes'"):
        data_config({"clases": (0, 1)})


def test_non_finite_and_zero_values_are_refused_before_anything_runs():
    for override, message in (("lr=inf", "lr=inf must be a finite number > 0"),
                              ("log_every=0", "log_every=0 must be a finite number > 0"),
                              ("max_skipped_fraction=1.5", "between 0 and 1")):
        with pytest.raises(ValueError, match=message):
            validate(apply_overrides(load_file(CONFIG), [override]))
