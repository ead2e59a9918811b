"""Strategy labels + config -> parameter groups -> one ``optax.GradientTransformation``.

Each parameter gets a group from, in this order: the strategy's label (``frozen`` or a
trainable group), the ``config.schedule`` table (big_vision style ``[(regex, schedule)]``,
``None`` = frozen), ``config.lr_mults`` / ``config.wd_mults`` and the strategy's own
multipliers, start steps (gradual unfreezing, LP-FT) and L2-SP anchor. Frozen groups get
``optax.set_to_zero()`` (no state). Trainable groups get the optimizer wrapped in
``optax.inject_hyperparams``, so learning rates and unfreezing are traced values of the
step count: changing them never recompiles the train step.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Dict, NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax

from tljax import params as P
from tljax.defaults import CHOICES
from tljax.strategies import FROZEN, Strategy

OPTIMIZERS = CHOICES["optimizer"]
LR_SCHEDULES = CHOICES["lr_schedule"]


def make_schedule(name: str, lr: float, total_steps: int, warmup_steps: int = 0) -> Callable:
    """Linear warm-up to ``lr`` then ``name`` decay (to zero for cosine/linear) at ``total_steps``."""
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


def schedule_from_entry(entry, config, total_steps: int) -> Callable:
    """A table entry -> ``step -> lr``: a name, a dict (``decay_type``, ``lr``, ``warmup_steps``)
    or any callable (an optax schedule or the user's own function of the step)."""
    if callable(entry):
        return entry
    if isinstance(entry, str):
        return make_schedule(entry, config.lr, total_steps, config.warmup_steps)
    if isinstance(entry, dict) or hasattr(entry, "to_dict"):
        entry = dict(entry)
        unknown = set(entry) - {"decay_type", "lr", "warmup_steps"}
        if unknown:
            raise ValueError(f"schedule entry has unknown keys {sorted(unknown)}; allowed: decay_type, lr, warmup_steps")
        return make_schedule(entry.get("decay_type", config.lr_schedule), entry.get("lr", config.lr),
                             total_steps, entry.get("warmup_steps", config.warmup_steps))
    raise ValueError(f"schedule entry {entry!r}: use None (frozen), a name in {LR_SCHEDULES}, a dict or a callable")


def first_match(path: str, rules: Sequence[Tuple[str, Any]], default):
    return next((value for pattern, value in rules if re.fullmatch(pattern, path)), default)


class Group(NamedTuple):
    """Everything that decides how one parameter is updated; its ``name`` labels it for optax."""

    label: str
    schedule: int = 0  # index into the schedule table
    lr_mult: float = 1.0
    wd_mult: float = 1.0
    start_step: int = 0
    l2sp: str = ""  # "anchor": pulled to its pretrained value; "decay": pulled to zero

    @property
    def name(self) -> str:
        """Readable and unique per distinct group, e.g. ``trainable lr×10`` or ``trainable from_step=40``."""
        if self.label == FROZEN:
            return FROZEN
        parts = [self.label]
        parts += [f"schedule={self.schedule}"] if self.schedule else []
        parts += [f"lr×{self.lr_mult:g}"] if self.lr_mult != 1.0 else []
        parts += [f"wd×{self.wd_mult:g}"] if self.wd_mult != 1.0 else []
        parts += [f"from_step={self.start_step}"] if self.start_step else []
        parts += [f"l2sp={self.l2sp}"] if self.l2sp else []
        return " ".join(parts)


def schedule_table(config):
    table = list(config.schedule or [(".*", config.lr_schedule)])
    for pattern, _ in table:
        re.compile(pattern)
    return table


def plan_groups(config, strategy: Strategy, labels, total_steps: int, steps_per_epoch: int):
    """Flat ``{path: Group}``; checks that every parameter has a schedule-table entry."""
    flat = P.flatten(labels)
    paths = list(flat)
    table = schedule_table(config)
    lr_mults = list(config.lr_mults) + strategy.resolve("lr_mults", paths)
    wd_mults = list(config.wd_mults)
    starts = [(rx, int(round(e * steps_per_epoch))) for rx, e in strategy.resolve("start_epochs", paths)]
    if strategy.lp_fraction:
        starts = [("head/.*", 0), (".*", int(total_steps * strategy.lp_fraction))] + starts
    groups = {}
    for path, label in flat.items():
        index = next((i for i, (rx, _) in enumerate(table) if re.fullmatch(rx, path)), None)
        if index is None:
            raise ValueError(f"config.schedule covers no rule for {path!r}; end it with ('.*', None) to freeze the rest")
        if label == FROZEN or table[index][1] is None:
            groups[path] = Group(FROZEN)
            continue
        l2sp = "" if strategy.l2sp is None else ("decay" if path.startswith("head/") else "anchor")
        groups[path] = Group(label, index, float(first_match(path, lr_mults, 1.0)),
                             float(first_match(path, wd_mults, 1.0)), first_match(path, starts, 0), l2sp)
    return groups


class AnchorState(NamedTuple):
    anchor: Any


def pull_to_anchor(alpha: float) -> optax.GradientTransformation:
    """L2-SP (Li et al. 2018): adds α(θ − θ₀) to the gradient, θ₀ the parameters at ``init``."""

    def init(params):
        return AnchorState(jax.tree.map(jnp.array, params))

    def update(updates, state, params):
        return jax.tree.map(lambda g, p, p0: g + alpha * (p - p0), updates, params, state.anchor), state

    return optax.GradientTransformation(init, update)


def gate(start_step: int) -> optax.GradientTransformation:
    """Zeroes updates before ``start_step``: the group is unfrozen by a traced comparison."""
    return optax.scale_by_schedule(lambda count: (count >= start_step).astype(jnp.float32))


def group_transform(group: Group, config, table, total_steps: int, l2sp=None) -> optax.GradientTransformation:
    base = schedule_from_entry(table[group.schedule][1], config, total_steps)
    lr = lambda step: base(step) * group.lr_mult  # noqa: E731
    wd = config.wd * group.wd_mult
    if config.optimizer == "adamw":
        inner = optax.inject_hyperparams(optax.adamw)(learning_rate=lr, weight_decay=wd)
    elif config.optimizer == "sgd":
        inner = optax.chain(optax.add_decayed_weights(wd),
                            optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=config.momentum or None))
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; allowed: {OPTIMIZERS}")
    parts = []
    if group.start_step > 0:  # before: no moments accumulate; after: no weight decay either
        parts.append(gate(group.start_step))
    if group.l2sp:
        alpha, beta = l2sp
        parts.append(pull_to_anchor(alpha) if group.l2sp == "anchor" else optax.add_decayed_weights(beta))
    parts.append(inner)
    if group.start_step > 0:
        parts.append(gate(group.start_step))
    return optax.chain(*parts) if len(parts) > 1 else inner


def make_optimizer(config, strategy: Strategy, labels, total_steps: int, steps_per_epoch: int = 1):
    """Returns ``(tx, group_names)``; ``group_names`` is the label pytree optax uses."""
    groups = plan_groups(config, strategy, labels, total_steps, steps_per_epoch)
    table = schedule_table(config)
    transforms: Dict[str, optax.GradientTransformation] = {}
    for group in dict.fromkeys(groups.values()):  # first-seen order: the same program in every process
        transforms[group.name] = (optax.set_to_zero() if group.label == FROZEN
                                  else group_transform(group, config, table, total_steps, strategy.l2sp))
    names = P.unflatten({k: g.name for k, g in groups.items()})
    return optax.multi_transform(transforms, names), names


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    return max(1, math.ceil(num_examples / batch_size))
