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
    with pytest.raises(ValueError, match="num_steps=0 must be > 0"):
        validate(apply_overrides(load_file(CONFIG), ["num_steps=0"]))


def test_parse_args_and_cli_error(tmp_path):
    config, workdir = parse_args(["--config", CONFIG, "--workdir", str(tmp_path), "--config.seed=3"])
    assert config.seed == 3 and workdir == str(tmp_path)
    with pytest.raises(ValueError, match="usage"):
        parse_args(["--config", CONFIG])
