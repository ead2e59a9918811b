"""Labels + config -> one ``optax.GradientTransformation``.

Each trainable group gets the configured optimizer; the ``frozen`` group gets
``optax.set_to_zero()``, which holds no state, so frozen parameters cost no optimizer memory.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence, Tuple

import optax

from tljax import params as P
from tljax.strategies import FROZEN

OPTIMIZERS = ("adamw", "sgd")
LR_SCHEDULES = ("cosine", "linear", "constant")


def make_schedule(name: str, lr: float, total_steps: int, warmup_steps: int = 0) -> Callable:
    """Linear warm-up to ``lr`` then ``name`` decay to zero at ``total_steps``."""
    if name not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {name!r}; allowed: {LR_SCHEDULES}")
    decay_steps = max(total_steps - warmup_steps, 1)
    decay = {
        "cosine": optax.cosine_decay_schedule(lr, decay_steps),
        "linear": optax.linear_schedule(lr, 0.0, decay_steps),
        "constant": optax.constant_schedule(lr),
    }[name]
    if warmup_steps <= 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), decay], [warmup_steps])


def make_inner(name: str, schedule, wd: float = 0.0, momentum: float = 0.9) -> optax.GradientTransformation:
    if name == "adamw":
        return optax.adamw(schedule, weight_decay=wd)
    if name == "sgd":
        return optax.chain(optax.add_decayed_weights(wd), optax.sgd(schedule, momentum=momentum or None))
    raise ValueError(f"unknown optimizer {name!r}; allowed: {OPTIMIZERS}")


def lr_multiplier(path: str, lr_mults: Sequence[Tuple[str, float]]) -> float:
    """First ``(regex, mult)`` rule that fully matches ``path``; 1.0 when none does."""
    return next((float(m) for pattern, m in lr_mults if re.fullmatch(pattern, path)), 1.0)


def optimizer_groups(labels, lr_mults=()):
    """Strategy labels refined by learning-rate multiplier: ``'trainable'`` -> ``'trainable@lr*10'``."""
    flat = P.flatten(labels)
    return P.unflatten({k: v if v == FROZEN or lr_multiplier(k, lr_mults) == 1.0
                        else f"{v}@lr*{lr_multiplier(k, lr_mults):g}" for k, v in flat.items()})


def make_optimizer(config, labels, total_steps: int) -> optax.GradientTransformation:
    """``optax.multi_transform`` over the strategy's labels, frozen group -> set_to_zero.

    ``config.lr_mults`` (``[(regex, mult), …]``, first match wins) scales the learning rate
    of matching trainable parameters, e.g. a 10× faster new head.
    """
    groups = optimizer_groups(labels, config.get("lr_mults", ()))
    transforms = {}
    for group in sorted(set(P.flatten(groups).values())):
        if group == FROZEN:
            transforms[group] = optax.set_to_zero()
            continue
        mult = float(group.partition("@lr*")[2] or 1.0)
        schedule = make_schedule(config.lr_schedule, config.lr * mult, total_steps, config.warmup_steps)
        transforms[group] = make_inner(config.optimizer, schedule, config.wd, config.momentum)
    return optax.multi_transform(transforms, groups)
