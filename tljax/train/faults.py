"""What the training loop does when something goes wrong, kept out of ``loop.fit``.

- A NaN or inf loss (or gradient norm): ``config.nan_policy='stop'`` ends the run with the
  step, the batch and its training-split example indices, and saves nothing. When the latest
  checkpoint holds the parameters that gave that loss and they give a non-finite loss or
  gradient on the batch before too (diverged parameters, however finite they look, not one bad batch), it is
  moved aside, so a rerun resumes from a checkpoint that still trains. ``'skip'`` drops the update inside the compiled step; the run
  stops once more than ``config.max_skipped_fraction`` of its steps were skipped.
- A checkpoint of another run (model, strategy, optimizer, batch size, learning rate) is a
  ``CheckpointMismatchError`` naming the field; nothing is moved.
- Unreadable checkpoints (truncated or corrupt files, non-finite parameters) are reported and
  *moved aside* to ``<workdir>/ckpt.corrupt/`` (never deleted), and the previous one is used;
  so is a write that never finished (orbax's ``*.orbax-checkpoint-tmp*`` folder).
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.experimental.multihost_utils
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from tljax import checkpoint, data
from tljax import params as P

UNFINISHED = ".orbax-checkpoint-tmp"


class TrainingFault(RuntimeError):
    """A run that cannot go on; the message says what happened and what to do."""


class NonFiniteLoss(TrainingFault):
    pass


def _say(message: str) -> None:
    if jax.process_index() == 0:
        print(message, flush=True)


# --- non-finite losses -----------------------------------------------------------------------

class NanGuard:
    """Checks each step's fetched metrics (no extra device sync) under ``config.nan_policy``."""

    def __init__(self, config, split, mngr: ocp.CheckpointManager):
        self.policy, self.split, self.mngr = config.nan_policy, split, mngr
        self.batch_size, self.seed, self.num_steps = config.batch_size, config.seed, config.num_steps
        self.max_skipped = config.max_skipped_fraction * config.num_steps
        self.skip = self.policy == "skip"
        self.skipped_batches = []

    def examples(self, batch_index: int):
        return data.pipeline.batch_example_indices(self.split, self.batch_size, self.seed, batch_index).tolist()

    def check(self, metrics: Dict[str, Any], batch_index: int, trains_at=None) -> None:
        """``batch_index``: the 0-based global batch of this run (its step before the update).

        ``trains_at(step)``: whether checkpoint ``step`` gives a finite loss and gradient on a batch
        that trained without trouble before; False marks that checkpoint as diverged."""
        if self.skip:
            if metrics["skipped"]:
                self.skipped_batches.append(batch_index)
                if len(self.skipped_batches) > self.max_skipped:
                    raise NonFiniteLoss(
                        f"{len(self.skipped_batches)} of {batch_index + 1} steps so far had a non-finite loss and were "
                        f"skipped (batches {self.skipped_batches[:10]}…), more than config.max_skipped_fraction="
                        f"{self.max_skipped / self.num_steps:g} of the run's {self.num_steps} steps. Lower config.lr, "
                        "check those batches' examples, or raise config.max_skipped_fraction")
            return
        loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
        if np.isfinite(loss) and np.isfinite(grad_norm):
            return
        poisoned = batch_index in self.mngr.all_steps() and trains_at is not None and not trains_at(batch_index)
        moved = self.drop_poisoned_checkpoint(batch_index) if poisoned else ""
        latest = self.mngr.latest_step()
        kept = (f"the last good checkpoint is step {latest} in {self.mngr.directory} (rerunning resumes there)"
                if latest is not None else "no good checkpoint is left, a rerun starts from step 0")
        raise NonFiniteLoss(
            f"non-finite loss {loss} (gradient norm {grad_norm}) at step {batch_index + 1}: batch {batch_index} of "
            f"this run (0-based, global batch of {self.batch_size}), training-split examples "
            f"{self.examples(batch_index)}. Stopped without saving{moved}: {kept}. Lower config.lr, check those "
            "examples, or set --config.nan_policy=skip to drop such updates")

    def drop_poisoned_checkpoint(self, batch_index: int) -> str:
        """Moves aside the checkpoint saved at ``batch_index``: its parameters gave the non-finite loss."""
        where = "(left in place by the other processes)"
        if jax.process_index() == 0:
            where = set_aside(self.mngr.directory / str(batch_index), str(self.mngr.directory), ".nonfinite")
        _sync(f"tljax_nonfinite_checkpoint_{batch_index}")
        self.mngr.reload()
        return (f"; checkpoint step {batch_index} holds the parameters that gave it, and they give a non-finite loss "
                f"or gradient on the batch before it too, so it was moved aside to {where} (not deleted)")

    def summary(self) -> Dict[str, Any]:
        """Counts this process's run (a resumed run counts from ``resumed_from_step``)."""
        return {"nan_policy": self.policy, "skipped_steps": len(self.skipped_batches),
                "skipped_batches": self.skipped_batches[:100]}


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)] or [True]))


def check_finite_before_save(state, step: int) -> None:
    """A state with a non-finite parameter or optimizer value is never saved as a checkpoint."""
    if not bool(_all_finite((state.params, state.opt_state))):
        raise NonFiniteLoss(f"the parameters or optimizer state after step {step} are not finite; not saving them. "
                            "Rerunning resumes from the last good checkpoint; lower config.lr")


# --- checkpoints -----------------------------------------------------------------------------

def set_aside(path: os.PathLike, ckpt_dir: str, suffix: str = ".corrupt") -> str:
    """Moves ``path`` to ``<ckpt_dir><suffix>/<name>`` (a fresh name if taken); returns where."""
    target_dir = os.path.abspath(ckpt_dir) + suffix
    os.makedirs(target_dir, exist_ok=True)
    target, n = os.path.join(target_dir, os.path.basename(str(path))), 1
    while os.path.exists(target):
        target, n = os.path.join(target_dir, f"{os.path.basename(str(path))}.{n}"), n + 1
    shutil.move(str(path), target)
    return target


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        jax.experimental.multihost_utils.sync_global_devices(name)


def checkpoint_manager(ckpt_dir: str) -> ocp.CheckpointManager:
    """``checkpoint.manager`` after moving aside writes that never finished (killed mid-save)."""
    if jax.process_index() == 0 and os.path.isdir(ckpt_dir):
        for name in sorted(os.listdir(ckpt_dir)):
            if UNFINISHED in name:
                where = set_aside(os.path.join(ckpt_dir, name), ckpt_dir)
                _say(f"warning: checkpoint step {name.split('.')[0]} in {ckpt_dir} was never finished (the run "
                     f"stopped while writing it); moved it aside to {where} (not deleted), and resuming from the "
                     "latest complete checkpoint")
    _sync("tljax_unfinished_checkpoints")
    return checkpoint.manager(ckpt_dir)


def _read(mngr, state, sharding, step: int):
    restored = checkpoint.restore(mngr, state, sharding, step)
    data_state = {item: checkpoint.restore_json(mngr, step, item) for item in ("data", "selection")}
    bad = [k for k, v in P.flatten(restored.params).items() if not np.all(np.isfinite(jax.device_get(v)))]
    if bad:
        raise ValueError(f"non-finite values in {len(bad)} parameters, e.g. {bad[0]!r}")
    return restored, data_state


def restore_latest_good(mngr: ocp.CheckpointManager, state, sharding, meta: Dict[str, Any],
                        changeable: Sequence[str] = (), allow_changes: bool = False
                        ) -> Tuple[Any, Optional[Dict], Dict[str, Any]]:
    """``(state, {'data': iterator state, 'selection': …}, changes)`` of the newest checkpoint that
    restores, or ``(None, None, {})``. ``changes``: the ``changeable`` fields that differ, when ``allow_changes``.

    A checkpoint of another run (its meta or its arrays' shapes differ) is refused with
    ``CheckpointMismatchError`` before anything is read or moved; only unreadable ones are set aside.
    """
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            changes = checkpoint.check_meta(checkpoint.read_meta(mngr, step), checkpoint.describe(state, **meta),
                                            str(mngr.directory), changeable, allow_changes)
            checkpoint.check_structure(mngr, step, state)
            return (*_read(mngr, state, sharding, step), changes)
        except checkpoint.CheckpointMismatchError:
            raise
        except Exception as e:  # noqa: BLE001 (orbax/tensorstore/json raise many kinds)
            problem = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        where = "(left in place by the other processes)"
        if jax.process_index() == 0:
            where = set_aside(mngr.directory / str(step), str(mngr.directory))
        _sync(f"tljax_corrupt_checkpoint_{step}")
        mngr.reload()
        previous = [s for s in mngr.all_steps() if s < step]
        _say(f"warning: checkpoint step {step} in {mngr.directory} is unreadable ({problem}); moved it aside to "
             f"{where} (not deleted); " + (f"trying step {max(previous)}" if previous else
                                          "no older checkpoint: training starts from step 0"))
    return None, None, {}
