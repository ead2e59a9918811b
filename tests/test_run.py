"""The entry point: bad values refused before anything runs, in one ``error:`` line; the resolved
config saved beside the run; a failed checkpoint write reported once."""

import json
import os

import pytest

from tljax.run import main

from conftest import ROOT, run_train

CONFIG = os.path.join(ROOT, "configs", "digits_transfer.py:runlocal")


def refused(tmp_path, capsys, *overrides):
    """Runs the entry point in this process; returns its one-line error (nothing may be trained)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", CONFIG, "--workdir", str(tmp_path), "--config.compilation_cache=", *overrides])
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "source").exists() and not (tmp_path / "ckpt").exists()
    return message


@pytest.mark.parametrize("override, expected", [
    ("--config.log_every=0", "config.log_every=0 must be a finite number > 0"),
    ("--config.lr=inf", "config.lr=inf must be a finite number > 0"),
    ("--config.strategy=freeze:backbone/nothing/.*", "'freeze:backbone/nothing/.*' does not fit resnet_digits: rules "
                                                     "['backbone/nothing/.*'] match no parameter"),
    ("--config.batch_size=4096", "config.batch_size=4096 is larger than the training split (50 examples)"),
    ("--config.data.classes=(5,)", "has 1 class (['5']); a classifier needs at least two"),
    ("--config.nan_policy=sometimes", "config.nan_policy='sometimes' is not allowed; choose one of ('stop', 'skip')"),
])
def test_bad_values_are_refused_before_anything_runs(tmp_path, capsys, override, expected):
    assert expected in refused(tmp_path, capsys, override)


def test_batch_sizes_must_split_over_the_devices(tmp_path):
    two_devices = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    for override, field in (("--config.eval_batch_size=255", "config.eval_batch_size=255"),
                            ("--config.batch_size=31", "config.batch_size=31"),
                            ("--config.source.batch_size=63", "config.source.batch_size=63")):
        result = run_train(tmp_path / field, override, "--config.compilation_cache=", env=two_devices, check=False)
        assert result.returncode == 1 and f"{field} does not divide over the 2 devices" in result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / field / "source").exists()


def test_help_lists_the_fields(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "nan_policy" in capsys.readouterr().out


def test_resolved_config_is_saved_beside_the_run(tmp_path):
    run_train(tmp_path, "--config.compilation_cache=", "--config.lr=0.002")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["lr"] == 0.002 and saved["data"]["labels_per_class"] == 10 and saved["source"]["num_steps"] == 20


def test_failed_checkpoint_write_is_one_clear_error(tmp_path):
    """A disk that refuses the write (here: a file-size limit) gives one line naming the step, the
    folder and the cause, not orbax's threads' tracebacks."""
    result = run_train(tmp_path, "--config.compilation_cache=", "--config.model.widths=(32, 64, 128)",
                       entry=(os.path.join(ROOT, "tests", "limited_file_size.py"), "200000"), check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "it/s" not in line and line.strip()]
    assert errors == [f"error: could not write checkpoint step 10 to {tmp_path}/source/ckpt (File too large, errno 27); "
                      "the checkpoints before it are intact and a rerun resumes from the latest of them: free disk "
                      "space or pick another --workdir"], result.stderr[-2000:]


def test_a_text_job_without_a_tokenizer_uses_the_one_saved_with_the_weights(tmp_path):
    from tljax.defaults import base_config
    from tljax.run import follow_weights_tokenizer

    (tmp_path / "tokenizer.json").write_text("{}")
    config = base_config()
    config.pretrained, config.data.source = str(tmp_path), "text_tsv"
    follow_weights_tokenizer(config)
    assert config.data.tokenizer == str(tmp_path / "tokenizer.json")
    config.data.tokenizer = "mine.json"  # a tokenizer the user names wins
    follow_weights_tokenizer(config)
    assert config.data.tokenizer == "mine.json"
    image = base_config()
    image.pretrained = str(tmp_path)  # an image job keeps no tokenizer
    follow_weights_tokenizer(image)
    assert image.data.tokenizer == ""
    bare = base_config()
    bare.pretrained, bare.data.source = str(tmp_path / "missing"), "text_tsv"
    follow_weights_tokenizer(bare)
    assert bare.data.tokenizer == ""
