"""What a run reports: ``metrics.jsonl`` lines, peak memory, the comparison table."""

from __future__ import annotations

import json
import os
from typing import Any, Dict

import jax


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``; drops lines past a resumed step."""

    def __init__(self, path: str, resume_step: int):
        self.path = path
        self.enabled = jax.process_index() == 0
        if self.enabled and os.path.exists(path):
            with open(path) as f:
                kept = [line for line in f if json.loads(line).get("step", 0) <= resume_step]
            with open(path, "w") as f:
                f.writelines(kept)

    def write(self, **record):
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def memory_usage() -> Dict[str, Any]:
    """Peak resident memory of this process, and the device's own peak where it reports one."""
    import resource  # noqa: PLC0415 (POSIX only)

    stats = jax.local_devices()[0].memory_stats() or {}
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "device_peak_bytes": stats.get("peak_bytes_in_use")}


def write_benchmark(out_dir: str, name: str, payload: Dict[str, Any], markdown: str) -> None:
    """A benchmark's ``DIR/name.json`` (the numbers) and ``DIR/name.md`` (the table), also printed."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(payload, f, indent=1)
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
