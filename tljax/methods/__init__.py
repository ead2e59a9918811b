"""Transfer methods beyond fine-tuning, each a config section and a few functions.

``loop.run`` hands the job to the method whose section the config sets: ``config.distill``
(knowledge distillation), ``config.tasks`` (multi-task heads on one trunk), ``config.adapt``
(DANN domain adaptation). Each trains through ``loop.fit`` with its own ``loss_fn`` hook, so
strategies, optimizers, checkpoints and summaries are the ordinary ones.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Optional

import jax
import ml_collections

SECTIONS = ("distill", "tasks", "adapt")


def overlay(config, fields, drop=SECTIONS + ("source", "compare", "bench")) -> ml_collections.ConfigDict:
    """``config`` without the ``drop`` sections and with ``fields`` on top (e.g. the teacher's run)."""
    merged = {k: v for k, v in config.to_dict().items() if k not in drop}
    merged.update(fields.to_dict() if hasattr(fields, "to_dict") else dict(fields))
    return ml_collections.ConfigDict(merged)


def write_summary(workdir: str, summary) -> None:
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)


def dispatch(config) -> Optional[Callable]:
    """The ``run(config, workdir)`` of the method the config selects, or None."""
    chosen = [s for s in SECTIONS if config.get(s)]
    if len(chosen) > 1:
        raise ValueError(f"config sets {chosen}; one method per run")
    if not chosen:
        return None
    from tljax.methods import adapt, distill, multitask  # noqa: PLC0415

    return {"distill": distill.run, "tasks": multitask.run, "adapt": adapt.run}[chosen[0]]
