"""What a run reports: ``summary.json`` and ``config.json`` (written atomically), ``metrics.jsonl``
lines (read back tolerantly), peak memory, the comparison table."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any, Dict, Optional

import jax
from tqdm import tqdm

SUMMARY = "summary.json"


def write_json(path: str, payload: Any) -> None:
    """``path`` holds either its old content or all of ``payload``, never a torn file: the JSON is
    written to a temporary file in the same folder, flushed to disk, then renamed over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=1, default=_plain)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from the group
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _plain(value):
    """numpy scalars and arrays as Python numbers and lists; anything else as its repr."""
    return value.tolist() if hasattr(value, "tolist") else repr(value)


def read_json(path: str) -> Optional[Any]:
    """The JSON in ``path``; None (with a warning) when it is unreadable, so a damaged state file
    means "redo that part", not a crash on every rerun."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        print(f"warning: {path} is unreadable ({type(e).__name__}: {e}); ignoring it")
        return None


def write_summary(workdir: str, summary: Dict[str, Any]) -> None:
    """The one writer of ``WORKDIR/summary.json`` (process 0 only)."""
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, SUMMARY), summary)


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``; drops lines past a resumed step.

    With ``tensorboard`` and tensorboardX installed, the same numbers also go to TensorBoard
    event files in ``tb/`` beside it (events past a resumed step are purged there too).
    """

    def __init__(self, path: str, resume_step: int, tensorboard: bool = False):
        self.path = path
        self.enabled = jax.process_index() == 0
        self.writer = None
        if self.enabled and os.path.exists(path):
            kept = [line for line in read_lines(path) if json.loads(line).get("step", 0) <= resume_step]
            with open(path, "w") as f:
                f.writelines(kept)
        if self.enabled and tensorboard:
            self.writer = _tensorboard_writer(os.path.join(os.path.dirname(os.path.abspath(path)), "tb"),
                                              resume_step + 1)

    def write(self, **record):
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.writer is not None:
                for key, value in record.items():
                    if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                        self.writer.add_scalar(key, value, record["step"])

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


_warned = set()


def _tensorboard_writer(folder: str, purge_step: int):
    try:
        from tensorboardX import SummaryWriter  # noqa: PLC0415 (optional dependency)
    except ImportError:
        if "tensorboard" not in _warned:
            _warned.add("tensorboard")
            print("note: TensorBoard events need tensorboardX (pip install tensorboardX); metrics.jsonl has the "
                  "same numbers. --config.tensorboard=False silences this")
        return None
    return SummaryWriter(folder, purge_step=purge_step)


def progress(steps, initial: int, total: int, name: str):
    """A tqdm bar on a terminal; on a log file (SLURM, nohup) plain lines from ``show`` instead."""
    interactive = sys.stderr.isatty() and jax.process_index() == 0
    return tqdm(steps, initial=initial, total=total, desc=name, disable=not interactive)


def show(bar, name: str, done: int, total: int, record: Dict[str, float]) -> None:
    """The bar's loss, or one plain line per logged step when the bar is off."""
    if not bar.disable:
        bar.set_postfix(loss=f"{record['loss']:.3f}")
    elif jax.process_index() == 0:
        parts = [f"{k} {record[k]:.4g}" for k in ("loss", "accuracy", "lr") if k in record]
        print(f"{name} step {done}/{total}: " + ", ".join(parts)
              + f", {record.get('examples_per_s', 0):.0f} examples/s", flush=True)


def say(message: str) -> None:
    """One line from process 0, printed above a progress bar without breaking it."""
    if jax.process_index() == 0:
        tqdm.write(message)


def read_lines(path: str):
    """The JSON lines of a log; a torn line (a run killed mid-write) is dropped with a warning."""
    good = []
    with open(path, errors="replace") as f:
        for number, line in enumerate(f, 1):
            try:
                json.loads(line)
            except ValueError:
                print(f"warning: {path} line {number} is not a complete JSON record (a run stopped while "
                      "writing it?); dropping it")
                continue
            good.append(line if line.endswith("\n") else line + "\n")
    return good


def memory_usage() -> Dict[str, Any]:
    """Peak resident memory of this process, and the device's own peak where it reports one."""
    import resource  # noqa: PLC0415 (POSIX only)

    stats = jax.local_devices()[0].memory_stats() or {}
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "device_peak_bytes": stats.get("peak_bytes_in_use")}


def write_benchmark(out_dir: str, name: str, payload: Dict[str, Any], markdown: str) -> None:
    """A benchmark's ``DIR/name.json`` (the numbers) and ``DIR/name.md`` (the table), also printed."""
    write_json(os.path.join(out_dir, f"{name}.json"), payload)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(markdown)
    print(markdown)


def table(summaries: Dict[str, Dict[str, Any]]) -> str:
    rows = ["| strategy | accuracy | f1_macro | trainable params | opt state floats | train s | step ms |",
            "|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        rows.append(f"| {name} | {s['accuracy']:.3f} | {s['f1_macro']:.3f} | {s['trainable_params']:,} | "
                    f"{s['opt_state_floats']:,} | {s['train_seconds']:.1f} | {s['step_ms_median'] or 0:.1f} |")
    return "\n".join(rows)
