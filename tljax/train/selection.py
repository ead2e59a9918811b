"""Which checkpoint a run ends with: the best validation evaluation so far, and when to stop.

``Selection`` follows ``config.best_metric`` / ``best_mode`` over the periodic validation
evaluations and counts evaluations without improvement for ``early_stopping_patience``. Its
state is a small JSON dict saved with every checkpoint, so a resumed run keeps the best so far
and the patience count. The best variables themselves go to ``WORKDIR/ckpt_best``: an orbax
manager that keeps the one best checkpoint by that metric, beside ``WORKDIR/ckpt`` (the latest,
for resuming).
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, Optional

import orbax.checkpoint as ocp


def resolve_mode(metric: str, mode: str) -> str:
    return ("min" if metric == "loss" else "max") if mode == "auto" else mode


class Selection:
    def __init__(self, metric: str, mode: str, patience: int, state: Optional[Dict[str, Any]] = None):
        self.metric, self.mode, self.patience = metric, resolve_mode(metric, mode), patience
        state = state or {}
        self.best_value: Optional[float] = state.get("best_value")
        self.best_step: Optional[int] = state.get("best_step")
        self.since_best: int = state.get("since_best", 0)
        self.evaluations: int = state.get("evaluations", 0)

    def improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self.mode == "max" else value < self.best_value

    def update(self, step: int, metrics: Dict[str, Any]) -> bool:
        """Records one evaluation; True when it is the best so far (save it)."""
        value = float(metrics[self.metric])
        self.evaluations += 1
        if self.improves(value):
            self.best_value, self.best_step, self.since_best = value, step, 0
            return True
        self.since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.since_best >= self.patience

    def state(self) -> Dict[str, Any]:
        return {"best_value": self.best_value, "best_step": self.best_step, "since_best": self.since_best,
                "evaluations": self.evaluations}


def best_manager(workdir: str, metric: str, mode: str) -> ocp.CheckpointManager:
    """``WORKDIR/ckpt_best``: orbax keeps the single best checkpoint by ``metric``."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, cleanup_tmp_directories=True, enable_async_checkpointing=False,
        best_fn=lambda metrics: metrics[metric], best_mode=resolve_mode(metric, mode))
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "ckpt_best")), options=options)


def save_best(mngr: ocp.CheckpointManager, step: int, variables: Dict[str, Any], metrics: Dict[str, float]) -> None:
    """The evaluated variables (params and BatchNorm statistics) with their validation metrics.
    A step saved before a kill and reached again on resume holds the same values: kept as it is."""
    if step in mngr.all_steps():
        return
    items = {name: ocp.args.StandardSave(tree) for name, tree in variables.items() if tree}
    mngr.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)
    mngr.wait_until_finished()
