"""The entry point: ``python -m tljax.run --config FILE --workdir DIR [--config.key=value …]``.

config → checks that need no training (values, devices, the workdir) → one run per workdir
(a lock) → the resolved config saved as ``WORKDIR/config.json`` → the method the config
selects (``tljax.methods``: fine-tuning by default). Problems the user can fix end in one
``error:`` line, without a traceback. ``python -m tljax.train`` is the same command.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Dict

import jax

from tljax import config as C
from tljax import distributed, methods, pretrained
from tljax.checkpoint import CheckpointMismatchError, CheckpointWriteError
from tljax.train import devices, host_memory, report, workdir
from tljax.train.faults import TrainingFault

USER_ERRORS = (ValueError, KeyError, FileNotFoundError, TrainingFault, CheckpointMismatchError, CheckpointWriteError,
               workdir.WorkdirBusy)


def check_devices(config) -> None:
    """Batch sizes the devices of every process can split evenly (known before anything runs)."""
    n = jax.device_count()
    runs = [("", config)] + ([("source.", C.overlay(config, config.source))] if config.source else [])
    for prefix, cfg in runs:
        for field in ("batch_size", "eval_batch_size"):
            if cfg[field] % n:
                raise ValueError(f"config.{prefix}{field}={cfg[field]} does not divide over the {n} devices; use a "
                                 f"multiple of {n}, e.g. --config.{prefix}{field}={max(n, cfg[field] // n * n)}")
        if cfg.batch_size % (cfg.grad_accum * n):
            raise ValueError(f"config.{prefix}grad_accum={cfg.grad_accum} × {n} devices must divide "
                             f"batch_size {cfg.batch_size}")


TEXT_SOURCES = ("text_tsv", "text_csv")


def follow_weights_tokenizer(config) -> None:
    """A text job with no ``data.tokenizer`` uses the one saved with ``config.pretrained`` (a folder or
    Hub name), so token ids are the ones the weights were trained on."""
    if config.data.source in TEXT_SOURCES and not config.data.tokenizer and config.pretrained:
        config.data.tokenizer = pretrained.tokenizer_file(config.pretrained)


def run(config, workdir_path: str) -> Dict[str, Dict[str, Any]]:
    """The job: ``{run name: summary}`` (``{}`` when it stopped early and can be resumed)."""
    return methods.dispatch(config)(config, workdir_path)


def main(argv=None) -> None:
    logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's per-save chatter
    lock = None
    try:
        config, path = C.parse_args(sys.argv[1:] if argv is None else argv)
        host_memory.configure(config.host_malloc, restart=argv is None)  # before any thread allocates
        distributed.initialize(config)  # before any device is touched; no-op for one process
        devices.use_compilation_cache(config.compilation_cache)
        check_devices(config)
        workdir.check(path, config.min_free_mb)
        lock = workdir.Lock(path).acquire()
        follow_weights_tokenizer(config)
        if jax.process_index() == 0:
            report.write_json(os.path.join(path, "config.json"), config.to_dict())
        run(config, path)
    except USER_ERRORS as e:
        if jax.distributed.is_initialized() and jax.process_count() > 1:
            # not JAX's shutdown barrier: a lost peer would hold this process there until its heartbeat times out
            limits = distributed.timeouts(config)
            print(distributed.peer_lost_message(e, jax.process_index(), jax.process_count(),
                                                limits["heartbeat_timeout_seconds"]), file=sys.stderr, flush=True)
            os._exit(1)
        sys.exit(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}")
    finally:
        if lock is not None:
            lock.release()


if __name__ == "__main__":
    main()
