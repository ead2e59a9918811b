"""Resumable checkpoints with orbax: params, batch_stats, opt_state and meta as separate items.

Separate items let a run with another freezing strategy restore ``params`` alone. ``meta``
records the step and every parameter's shape, so a workdir that holds another model is
refused with a clear error before anything is overwritten or deleted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from typing import Any, Dict, Optional, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from tljax import params as P

STATE_ITEMS = ("params", "batch_stats", "opt_state")


class CheckpointMismatchError(ValueError):
    """The workdir's checkpoint belongs to another model or strategy."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, quota, permissions); earlier ones are intact."""


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def describe(state, **extra) -> Dict[str, Any]:
    """The meta item: what a checkpoint must match to be resumed."""
    shapes = {k: list(np.shape(v)) for k, v in P.flatten(state.params).items()}
    return {"step": int(state.step), "param_shapes": shapes, **extra}


def save(mngr: ocp.CheckpointManager, state, data_state: Optional[Dict[str, Any]] = None,
         selection: Optional[Dict[str, Any]] = None, **meta) -> None:
    """``data_state`` (the input iterator's JSON state) is saved as the ``data`` item, ``selection``
    (best-so-far and patience, ``tljax.train.selection``) as ``selection``. A failed write raises
    one ``CheckpointWriteError`` naming the step, the folder and the cause."""
    items = {name: ocp.args.StandardSave(getattr(state, name)) for name in STATE_ITEMS
             if jax.tree.leaves(getattr(state, name))}
    items["meta"] = ocp.args.JsonSave(describe(state, **meta))
    if data_state is not None:
        items["data"] = ocp.args.JsonSave(data_state)
    if selection is not None:
        items["selection"] = ocp.args.JsonSave(selection)
    step = int(state.step)
    try:
        with _quiet_background_failures():
            mngr.save(step, args=ocp.args.Composite(**items), force=True)
            mngr.wait_until_finished()
    except Exception as e:  # noqa: BLE001 (tensorstore/orbax raise ValueError, OSError, RuntimeError …)
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # its "never retrieved" echoes of the same cause
        raise CheckpointWriteError(
            f"could not write checkpoint step {step} to {mngr.directory} ({_cause(e)}); the checkpoints before "
            "it are intact and a rerun resumes from the latest of them: free disk space or pick another "
            "--workdir") from None


def _cause(error: Exception) -> str:
    """The operating system's words for a failed write (tensorstore buries them in a long message)."""
    codes = re.findall(r"os_error_code='?(\d+)", str(error))
    if codes:
        return f"{os.strerror(int(codes[-1]))}, errno {codes[-1]}"
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:300]


@contextlib.contextmanager
def _quiet_background_failures():
    """While a write fails, orbax's and tensorstore's threads print a traceback per pending callback
    ("Event loop is closed") and log the cause at ERROR; ``save`` reports the cause once instead."""
    hooks = sys.excepthook, sys.unraisablehook, threading.excepthook
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    sys.excepthook = sys.unraisablehook = threading.excepthook = lambda *args: None
    absl_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        sys.excepthook, sys.unraisablehook, threading.excepthook = hooks
        absl_logger.setLevel(level)


def restore_json(mngr: ocp.CheckpointManager, step: int, item: str) -> Optional[Dict[str, Any]]:
    """A JSON item (``data``: the input iterator's state, ``selection``) of checkpoint ``step``, or None."""
    if not (mngr.directory / str(step) / item).exists():
        return None
    return mngr.restore(step, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()}))[item]


def check_meta(saved: Dict[str, Any], expected: Dict[str, Any], directory: str,
               changeable: Sequence[str] = (), allow_changes: bool = False) -> Dict[str, Any]:
    """Refuses to resume a checkpoint of another model, strategy or optimizer (deletes nothing).

    ``changeable`` fields may differ when ``allow_changes``: they are returned as ``{field:
    [checkpoint's, this run's]}`` for the summary. Fields an older checkpoint did not record are
    not compared.
    """
    problems, changes = [], {}
    for key in sorted(set(saved) & set(expected)):
        if key == "step":
            continue
        if key == "param_shapes":
            a, b = saved[key], expected[key]
            diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            if diff:
                problems.append(f"{len(diff)} parameters differ, e.g. {diff[0]!r}: "
                                f"checkpoint {a.get(diff[0])}, this run {b.get(diff[0])}")
        elif saved[key] != expected[key]:
            if key in changeable and allow_changes:
                changes[key] = [saved[key], expected[key]]
            else:
                problems.append(f"{key}: checkpoint {saved[key]!r}, this run {expected[key]!r}")
    if problems:
        only_changeable = all(p.split(":")[0] in changeable for p in problems)
        raise CheckpointMismatchError(
            f"the checkpoint in {directory} belongs to a different run:\n  " + "\n  ".join(problems)
            + "\nNothing was deleted or moved. Rerun with the checkpoint's settings, use another --workdir, or remove "
            "that folder yourself to start over"
            + (" (or resume with the new values: --config.allow_resume_changes=True)" if only_changeable else "") + ".")
    return changes


def check_structure(mngr: ocp.CheckpointManager, step: int, state) -> None:
    """Compares the arrays each saved item holds (count and shapes, from orbax's metadata, no data
    read) with ``state``'s: another optimizer or strategy is a mismatch, not corruption."""
    for name in STATE_ITEMS:
        path = mngr.directory / str(step) / name
        mine = sorted(tuple(np.shape(x)) for x in jax.tree.leaves(getattr(state, name)))
        if not path.exists():
            if mine:
                raise FileNotFoundError(f"item {name!r} is missing")
            continue
        theirs = sorted(tuple(m.shape) for m in jax.tree.leaves(ocp.PyTreeCheckpointer().metadata(path).item_metadata))
        if theirs != mine:
            raise CheckpointMismatchError(
                f"the checkpoint in {mngr.directory} (step {step}) belongs to a different run: its {name} holds "
                f"{len(theirs)} arrays, this run's {len(mine)} (another optimizer, strategy or model?). Nothing was "
                "moved or deleted. Rerun with the checkpoint's settings, use another --workdir, or remove that "
                "folder yourself to start over.")


def read_meta(mngr: ocp.CheckpointManager, step: int) -> Dict[str, Any]:
    return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def restore(mngr: ocp.CheckpointManager, state, sharding, step: int):
    """Checkpoint ``step`` restored into ``state``'s structure and ``sharding`` (one, or a tree like
    ``state``). Any mesh can read what any other mesh wrote. Check its meta first (``check_meta``)."""
    names = [n for n in STATE_ITEMS if jax.tree.leaves(getattr(state, n))]
    restored = mngr.restore(step, args=ocp.args.Composite(
        **{n: ocp.args.StandardRestore(_abstract(getattr(state, n), sharding, n)) for n in names}))
    return state.replace(step=jax.numpy.asarray(step, jax.numpy.int32), **{n: restored[n] for n in names})


def _abstract(tree, sharding, name: str):
    """Restore targets: one ``sharding`` for every leaf, or a state-shaped tree of them (FSDP)."""
    if not isinstance(sharding, jax.sharding.Sharding):
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s),
                            tree, getattr(sharding, name))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree)


def load_params(directory: str, step: Optional[int] = None) -> Dict[str, Any]:
    """Only the ``params`` (and ``batch_stats``) of a checkpoint, as numpy: e.g. to start
    another strategy from them. ``directory`` is a workdir's ``ckpt`` folder. Reads as host
    arrays, so a checkpoint written on another device set or mesh loads anywhere."""
    mngr = manager(directory)
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    out = {}
    for name in ("params", "batch_stats"):
        path = mngr.directory / str(step) / name
        if not path.exists():
            continue
        checkpointer = ocp.PyTreeCheckpointer()
        tree = checkpointer.metadata(path).item_metadata
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        out[name] = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
    return out
