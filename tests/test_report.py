"""State files survive a kill: JSON written atomically, a torn metrics.jsonl line dropped with a warning."""

import json

import pytest

from tljax.train import loop, report


def test_write_json_leaves_the_old_file_whole_when_the_write_fails(tmp_path):
    path = tmp_path / "summary.json"
    report.write_json(str(path), {"accuracy": 0.5})

    class Unwritable:
        def tolist(self):
            raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        report.write_json(str(path), {"accuracy": 0.9, "bad": Unwritable()})
    assert json.loads(path.read_text()) == {"accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left


def test_a_truncated_state_file_reads_as_missing_with_a_warning(tmp_path, capsys):
    path = tmp_path / "summary.json"
    path.write_text('{"num_steps": 2')
    assert report.read_json(str(path)) is None
    assert "unreadable" in capsys.readouterr().out


def test_torn_last_metrics_line_is_dropped_and_the_run_resumes(runlocal_config, tmp_path, capsys):
    from tljax import data

    train, test, _ = data.load_splits(runlocal_config.data, 0)
    runlocal_config.stop_at_step, runlocal_config.ckpt_every = 4, 4
    loop.fit(runlocal_config, train, test, 5, str(tmp_path), "scratch")
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 1.2')  # killed mid-write
    runlocal_config.stop_at_step = 0
    out = loop.fit(runlocal_config, train, test, 5, str(tmp_path), "scratch")
    assert out.completed and "line 2 is not a complete JSON record" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]  # training records; the last line is the evaluation's
    assert steps == [4, 8, 12] and "test_accuracy" in records[-1]
