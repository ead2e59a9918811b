"""Multi-process start-up: ``initialize(config)`` before any other JAX call.

Where the coordinator, process count and process id come from, first match wins:

1. ``config.distributed.{coordinator_address, num_processes, process_id}`` (all optional);
2. the environment: ``TLJAX_COORDINATOR``, ``TLJAX_NUM_PROCESSES``, ``TLJAX_PROCESS_ID``
   (what ``scripts/launch_local.py`` sets);
3. a cluster JAX detects by itself (SLURM, Open MPI, Cloud TPU, Kubernetes):
   ``jax.distributed.initialize()`` with no arguments.

Nothing found, or one process: a no-op, so single-machine runs need no setup. On CPU the
cross-process collectives go through gloo (the CPU client has none otherwise).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional

import jax

FIELDS = ("coordinator_address", "num_processes", "process_id")
ENV = {"coordinator_address": "TLJAX_COORDINATOR", "num_processes": "TLJAX_NUM_PROCESSES",
       "process_id": "TLJAX_PROCESS_ID"}


def explicit_settings(config=None, environ: Mapping[str, str] = os.environ) -> Dict[str, Any]:
    """The fields given by ``config.distributed`` or, per field, by the environment; unset ones absent."""
    section = (config.get("distributed") if config is not None else None) or {}
    found: Dict[str, Any] = {}
    for field in FIELDS:
        value = section.get(field) if hasattr(section, "get") else None
        if value in (None, "", -1):
            value = environ.get(ENV[field]) or None
        if value is not None:
            found[field] = value if field == "coordinator_address" else int(value)
    return found


def detected_cluster() -> Optional[str]:
    """The name of a cluster environment JAX would auto-configure from, or None.

    Uses JAX's own detectors (private API, so any failure counts as "none").
    """
    try:
        from jax._src import clusters  # noqa: PLC0415

        for env in clusters.ClusterEnv._cluster_types:
            if not env.opt_in_only_method and env.is_env_present():
                return env.__name__
    except Exception:  # noqa: BLE001 (a detector that breaks must not stop a local run)
        return None
    return None


def plan(config=None, environ: Mapping[str, str] = os.environ, cluster: Optional[str] = None) -> Optional[Dict]:
    """Keyword arguments for ``jax.distributed.initialize``, or None for a single process.

    Pure, so the decision is testable without starting anything.
    """
    settings = explicit_settings(config, environ)
    if settings.get("num_processes", 0) > 1:
        missing = [ENV[f] for f in FIELDS if f not in settings]
        if missing:
            raise ValueError(f"{settings['num_processes']} processes need a coordinator address and a process "
                             f"id as well; set config.distributed.* or {', '.join(missing)}")
        if not 0 <= settings["process_id"] < settings["num_processes"]:
            raise ValueError(f"process_id {settings['process_id']} is outside [0, {settings['num_processes']})")
        return settings
    if settings.get("num_processes") == 1 or cluster is None:
        return None
    return {}  # the cluster supplies every argument


def initialize(config=None) -> int:
    """Joins the job's processes (see the module docstring). Returns ``jax.process_count()``.

    Must run before anything touches a JAX device; calling it twice is harmless.
    """
    if jax.distributed.is_initialized():
        return jax.process_count()
    kwargs = plan(config, os.environ, detected_cluster())
    if kwargs is None:
        return 1
    if jax.config.jax_cpu_collectives_implementation != "mpi":  # keep a user's explicit MPI
        # Only the CPU client reads this; GPU/TPU use NCCL/ICI whatever it says.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    return jax.process_count()
