"""Where arrays live: the device mesh of ``config.mesh``, shardings of batches and state
(replicated or FSDP-split), host copies, and the ahead-of-time jit of a step over the mesh
(kept on disk for the next run by JAX's persistent compilation cache).

Nothing here knows what the step computes; ``tljax.train.step`` knows nothing about devices.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tljax.train import workdir


MESH_AXES = ("data", "fsdp")
FSDP_MIN_ELEMENTS = 2 ** 14  # arrays smaller than this (64 KiB in float32) stay whole on every device

# XLA:CPU (jaxlib 0.10) hands convolutions and dots to YNNPACK by default. Its own (Eigen)
# convolutions are faster for ResNet's 3×3 ones (3×3, 64 channels at 56², fwd + both grads: 81 vs
# 132 ms; the ResNet-50 train step with the default took 1.06× as long, interleaved in one process),
# and so are its dots on the Zen 3: MiniLM's forward products 18–19 vs 22–26 ms at 2,048 × 384 ↔
# 1,536 and 7.8 vs 10.4 ms at 384 → 384, the gradients alike; the train steps with every dot on
# Eigen took 0.975 and 0.968 (MiniLM, 12 and 20 rotated rounds) and 0.93 (ResNet-50, 10) of those
# with YNNPACK's. Reductions stay on YNNPACK (on Eigen: 1.40×). 512-bit vectors for XLA's own
# element-wise loops (``xla_cpu_prefer_vector_width``) were no faster: 2,550 ms with them vs 2,519
# without, and 2,486 vs 2,385, in runs that rotate which variant follows PyTorch's step. A jaxlib
# that lacks an option here compiles with its defaults.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}


def make_mesh(axes=None, devices=None) -> Mesh:
    """The device mesh of ``config.mesh`` (all devices of all processes).

    ``(("data", -1),)`` (the default) is pure data parallelism; ``(("data", 2), ("fsdp", -1))``
    also splits parameters and optimizer state over ``fsdp`` (FSDP / ZeRO-3) for models too big
    to copy on every device. ``-1`` takes the devices left. The batch is split over every axis.
    """
    devices = np.asarray(devices if devices is not None else jax.devices())
    axes = tuple(tuple(a) for a in (axes or (("data", -1),)))
    names, sizes = [a[0] for a in axes], [int(a[1]) for a in axes]
    if any(n not in MESH_AXES for n in names) or len(set(names)) != len(names) or sizes.count(-1) > 1:
        raise ValueError(f"config.mesh={axes!r}: give distinct axes from {MESH_AXES} as (name, size) pairs, "
                         f"at most one size -1, e.g. (('data', 2), ('fsdp', -1))")
    fixed = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes and fixed and devices.size % fixed == 0:
        sizes[sizes.index(-1)] = devices.size // fixed
    if int(np.prod(sizes)) != devices.size or min(sizes) < 1:
        raise ValueError(f"config.mesh={axes!r} does not fit the {devices.size} devices: the sizes must multiply "
                         f"to {devices.size} (use -1 for one axis to take the rest)")
    return Mesh(devices.reshape(sizes), names)


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Batch rows split over every mesh axis (FSDP is data parallel too)."""
    return NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names)))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def fsdp_spec(shape, fsdp_size: int) -> PartitionSpec:
    """Splits an array's largest dimension that ``fsdp_size`` divides (big_vision's FSDP rule);
    small arrays, and those with no such dimension, stay whole."""
    if fsdp_size > 1 and int(np.prod(shape)) >= FSDP_MIN_ELEMENTS:
        for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
            if shape[dim] % fsdp_size == 0:
                return PartitionSpec(*[("fsdp" if d == dim else None) for d in range(len(shape))])
    return PartitionSpec()


def state_sharding(tree, mesh: Mesh):
    """Per-leaf shardings of a state pytree: replicated, or split over ``fsdp`` where the mesh has one.

    The rule depends on shape only, so AdamW's moments are split like their parameters.
    """
    fsdp = dict(mesh.shape).get("fsdp", 1)
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), fsdp)), tree)


def bytes_on_device(tree, device=None) -> int:
    """Bytes of a pytree's arrays held by one device (the first local one): what FSDP shrinks."""
    device = device or jax.local_devices()[0]
    return int(sum(shard.data.nbytes for x in jax.tree.leaves(tree) for shard in x.addressable_shards
                   if shard.device == device))


def to_host(tree):
    """Numpy copy of a (possibly FSDP-split, multi-process) pytree."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)


def check_global_batch(global_batch_size: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if global_batch_size % n:
        raise ValueError(f"batch_size {global_batch_size} does not divide the {n} devices of the mesh; "
                         f"use a multiple of {n}, e.g. --config.batch_size={max(n, global_batch_size // n * n)}")


def check_grad_accum(global_batch_size: int, grad_accum: int, mesh: Mesh) -> None:
    """Micro-batches must be equal and split evenly over the devices (so no data moves)."""
    n = grad_accum * mesh.devices.size
    if grad_accum < 1 or global_batch_size % n:
        raise ValueError(f"config.grad_accum={grad_accum} must be >= 1 and grad_accum × devices ({n}) must divide "
                         f"batch_size {global_batch_size}: each micro-batch has batch_size / grad_accum examples")


def shard_batch(batch, mesh: Mesh):
    """Host-local numpy batch -> global arrays sharded over ``data``."""
    sharding = data_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def abstract(tree, sharding):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x), sharding=sharding), tree)


def compile_train_step(step_fn, state, batch, mesh: Mesh, shardings=None, donate: bool = True):
    """AOT-compiles ``step_fn`` for these shapes. Returns ``(compiled, seconds, flops)``.

    State is placed by ``shardings`` (default: replicated) and donated: the new state reuses
    the old one's buffers. The batch is split on the mesh.
    """
    shardings = shardings if shardings is not None else replicated(mesh)
    jitted = jax.jit(step_fn, in_shardings=(shardings, data_sharding(mesh)),
                     out_shardings=(shardings, replicated(mesh)), donate_argnums=(0,) if donate else ())
    start = time.perf_counter()
    abstract_state = (abstract(state, shardings) if isinstance(shardings, jax.sharding.Sharding)
                      else jax.tree.map(lambda x, s: abstract(x, s), state, shardings))
    lowered = jitted.lower(abstract_state, abstract(batch, data_sharding(mesh)))
    compiled = compile_for(lowered, mesh)
    return compiled, time.perf_counter() - start, flops_of(lowered)


def use_compilation_cache(path: str, max_gb: float = 4.0) -> None:
    """Keeps compiled programs in ``path`` (JAX's persistent cache; ``""``: off), so a rerun, the next
    strategy on the same model or another process loads XLA's output instead of compiling again.

    Only compiles of ≥ 1 s are kept (JAX's default); past ``max_gb`` the least recently used go.
    Must run before the first compile. An unwritable folder is a config error, not a silent miss.
    """
    if not path:
        jax.config.update("jax_compilation_cache_dir", None)  # off, even where an earlier call turned it on
        return
    folder = os.path.expanduser(path)
    why = workdir.unwritable(folder)
    if why:
        raise ValueError(f"config.compilation_cache={path!r}: cannot write there ({why}); give a writable folder, "
                         f"or --config.compilation_cache='' to compile every time")
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_compilation_cache_max_size", int(max_gb * 2 ** 30))


def compilation_cache_dir():
    """The persistent cache compiled programs are kept in, or None."""
    return jax.config.jax_compilation_cache_dir or None


def on_cpu(mesh: Mesh) -> bool:
    """Whether the mesh's devices are CPUs: the one notion of "on CPU" (kernels, compiler options)."""
    return mesh.devices.flat[0].platform == "cpu"


def cpu_kernels_on(setting: str, mesh: Mesh) -> bool:
    """``config.cpu_kernels``: ``auto`` runs the XLA:CPU forms (``tljax.models.xla_cpu``) when the
    mesh is on CPU, ``on``/``off`` force them; they compute the plain ops' values either way."""
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"config.cpu_kernels={setting!r}; choose one of ('auto', 'on', 'off')")
    return setting == "on" or (setting == "auto" and on_cpu(mesh))


def compile_for(lowered, mesh: Mesh):
    """``lowered.compile()`` with ``CPU_COMPILER_OPTIONS`` on a CPU mesh without parameter sharding.

    With an ``fsdp`` axis the options stay off: there, Eigen's convolutions drifted from the
    data-parallel run (5.9e-5 after 3 Adam steps, tests/test_sharding.py; YNNPACK's: 1.2e-7).
    """
    if not on_cpu(mesh) or mesh.shape.get("fsdp", 1) > 1:
        return lowered.compile()
    try:
        return lowered.compile(compiler_options=CPU_COMPILER_OPTIONS)
    except jax.errors.JaxRuntimeError as e:
        if "option" not in str(e):
            raise
        return lowered.compile()


def flops_of(lowered) -> float:
    """XLA's FLOP count of a lowered (not yet optimised) computation, 0 when the backend gives none.

    The model's FLOPs, not the compiled program's: on XLA:GPU the compiled count leaves out the
    dots and convolutions handed to cuBLAS/cuDNN (4.7 of ResNet-50's ≈ 380 GFLOP per step), and
    jaxlib 0.11.2 gives no count before compiling there, so GPU reports 0 (unknown).
    """
    cost = lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))
