"""Transfer methods, each a config section and a ``run(config, workdir) -> {name: summary}``.

Fine-tuning (``finetune``) is the default; ``config.distill`` (knowledge distillation),
``config.tasks`` (multi-task heads on one trunk) and ``config.adapt`` (DANN domain adaptation)
select the others. Each trains through ``tljax.train.loop.fit`` (with its own ``loss_fn`` hook
where it needs one), so strategies, optimizers, checkpoints and summaries are the ordinary ones.
"""

from __future__ import annotations

from typing import Callable

SECTIONS = ("distill", "tasks", "adapt")


def dispatch(config) -> Callable:
    """The ``run(config, workdir)`` of the method the config selects (fine-tuning by default)."""
    chosen = [s for s in SECTIONS if config[s]]
    if len(chosen) > 1:
        raise ValueError(f"config sets {chosen}; one method per run")
    from tljax.methods import adapt, distill, finetune, multitask  # noqa: PLC0415 (import what is used)

    if not chosen:
        return finetune.run
    return {"distill": distill.run, "tasks": multitask.run, "adapt": adapt.run}[chosen[0]]
