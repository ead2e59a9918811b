"""What the training loop does when something goes wrong, kept out of ``loop.fit``.

- A NaN or inf loss (or gradient norm): ``config.nan_policy='stop'`` ends the run with the
  step, the batch and its training-split example indices, and saves nothing (the last good
  checkpoint stays the latest); ``'skip'`` drops the update inside the compiled step and the
  summary counts the skipped steps.
- Unreadable checkpoints: the latest one that fails to restore (truncated or corrupt files,
  non-finite parameters) is reported and *moved aside* to ``<workdir>/ckpt.corrupt/`` (never
  deleted), and the previous one is used. A checkpoint write that never finished (the run was
  killed while saving: orbax's ``*.orbax-checkpoint-tmp*`` folder) is moved aside the same way.
- A workdir without room (``config.min_free_mb``) fails before anything is trained.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Dict, Optional, Tuple

import jax
import jax.experimental.multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from tljax import checkpoint, data
from tljax import params as P

NAN_POLICIES = ("stop", "skip")
DEFAULT_MIN_FREE_MB = 200
UNFINISHED = ".orbax-checkpoint-tmp"


class TrainingFault(RuntimeError):
    """A run that cannot go on; the message says what happened and what to do."""


class NonFiniteLoss(TrainingFault):
    pass


def _say(message: str) -> None:
    if jax.process_index() == 0:
        print(message, flush=True)


def unwritable(folder: str) -> Optional[str]:
    """Why ``folder`` cannot be created or written to (a probe file is written and removed), or None."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".write_test.{jax.process_index()}")  # processes may share the folder
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        return str(e)
    return None


def check_free_space(workdir: str, min_free_mb: float) -> None:
    """Refuses a workdir whose filesystem has less than ``min_free_mb`` MB free."""
    free_mb = shutil.disk_usage(workdir).free / 2**20
    if free_mb < min_free_mb:
        raise SystemExit(f"workdir {workdir!r} has only {free_mb:,.0f} MB free on its disk; this run asks for at "
                         f"least config.min_free_mb={min_free_mb:,} MB for checkpoints and logs. Free some space, "
                         "pick another --workdir, or lower --config.min_free_mb")


# --- non-finite losses -----------------------------------------------------------------------

class NanGuard:
    """Checks each step's fetched metrics (no extra device sync) under ``config.nan_policy``."""

    def __init__(self, policy: str, split, global_batch_size: int, seed: int, mngr: ocp.CheckpointManager):
        if policy not in NAN_POLICIES:
            raise ValueError(f"config.nan_policy={policy!r} is not allowed; choose one of {NAN_POLICIES}")
        self.policy, self.split, self.batch_size, self.seed, self.mngr = policy, split, global_batch_size, seed, mngr
        self.skip = policy == "skip"
        self.skipped_batches = []

    def examples(self, batch_index: int):
        return data.pipeline.batch_example_indices(self.split, self.batch_size, self.seed, batch_index).tolist()

    def check(self, metrics: Dict[str, Any], batch_index: int) -> None:
        """``batch_index``: the 0-based global batch of this run (its step before the update)."""
        if self.skip:
            if metrics["skipped"]:
                self.skipped_batches.append(batch_index)
            return
        loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
        if np.isfinite(loss) and np.isfinite(grad_norm):
            return
        latest = self.mngr.latest_step()
        kept = (f"the last good checkpoint is step {latest} in {self.mngr.directory} (rerunning resumes there)"
                if latest is not None else "no checkpoint had been saved yet")
        raise NonFiniteLoss(
            f"non-finite loss {loss} (gradient norm {grad_norm}) at step {batch_index + 1}: batch {batch_index} of "
            f"this run (0-based, global batch of {self.batch_size}), training-split examples "
            f"{self.examples(batch_index)}. Stopped without saving: {kept}. Lower config.lr, check those examples, "
            "or set --config.nan_policy=skip to drop such updates")

    def summary(self) -> Dict[str, Any]:
        """Counts this process's run (a resumed run counts from ``resumed_from_step``)."""
        return {"nan_policy": self.policy, "skipped_steps": len(self.skipped_batches),
                "skipped_batches": self.skipped_batches[:100]}


# --- checkpoints -----------------------------------------------------------------------------

def set_aside(path: os.PathLike, ckpt_dir: str) -> str:
    """Moves ``path`` to ``<ckpt_dir>.corrupt/<name>`` (a fresh name if taken); returns where."""
    target_dir = os.path.abspath(ckpt_dir) + ".corrupt"
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


def _read(mngr, state, sharding, step: int, meta) -> Tuple[Any, Optional[Dict[str, Any]]]:
    restored = checkpoint.restore_latest(mngr, state, sharding, step=step, **meta)
    data_state = checkpoint.restore_data_state(mngr, step)
    bad = [k for k, v in P.flatten(restored.params).items() if not np.all(np.isfinite(jax.device_get(v)))]
    if bad:
        raise ValueError(f"non-finite values in {len(bad)} parameters, e.g. {bad[0]!r}")
    return restored, data_state


def restore_latest_good(mngr: ocp.CheckpointManager, state, sharding, **meta) -> Tuple[Any, Optional[Dict]]:
    """``(state, data iterator state)`` of the newest checkpoint that restores, or ``(None, None)``.

    A checkpoint of another model is refused (``CheckpointMismatchError``), not skipped.
    """
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            return _read(mngr, state, sharding, step, meta)
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
    return None, None
