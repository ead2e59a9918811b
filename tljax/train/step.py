"""Pure ``train_step(state, batch)`` / ``eval_step`` and their jit over a device mesh.

The step knows nothing about where weights came from or how data was read. It
differentiates only the trainable subtree (the frozen one is closed over, so XLA never
computes its gradients), runs frozen BatchNorms in inference mode, and leaves frozen
parameters bit-identical.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Dict, FrozenSet, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tljax import params as P


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def split_trainable(params, mask) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Flat ``(trainable, frozen)`` dicts of ``/``-joined path -> array."""
    flat, flat_mask = P.flatten(params), P.flatten(mask)
    trainable = {k: v for k, v in flat.items() if flat_mask[k]}
    frozen = {k: v for k, v in flat.items() if not flat_mask[k]}
    return trainable, frozen


def join(*flat_parts):
    merged = {}
    for part in flat_parts:
        merged.update(part)
    return P.unflatten(merged)


def frozen_batchnorms(batch_stats, mask) -> FrozenSet[str]:
    """Paths of BatchNorm modules whose scale and bias are frozen."""
    flat_mask = P.flatten(mask)
    modules = {k.rsplit("/", 1)[0] for k in P.flatten(batch_stats)}
    return frozenset(m for m in modules
                     if not any(flat_mask.get(f"{m}/{p}", False) for p in ("scale", "bias")))


def batchnorm_in_inference_mode(module_paths: FrozenSet[str]):
    """A flax interceptor forcing ``use_running_average=True`` on the named BatchNorms."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if (context.method_name == "__call__" and isinstance(module, nn.BatchNorm)
                and "/".join(module.path) in module_paths):
            kwargs = {**kwargs, "use_running_average": True}
        return next_fun(*args, **kwargs)

    return nn.intercept_methods(interceptor)


def model_inputs(batch) -> Tuple[tuple, dict]:
    """Positional and keyword inputs of a model for an image, a text or a cached-feature batch."""
    if "image" in batch:
        return (batch["image"],), {}
    if "features" in batch:
        return (batch["features"],), {}
    kwargs = {k: batch[k] for k in ("attention_mask", "token_type_ids") if k in batch}
    return (batch["input_ids"],), kwargs


def cross_entropy(logits, labels, weights=None):
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    if weights is None:
        return losses.mean()
    return (losses * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def classification_loss(outputs, batch, step):
    """The default ``loss_fn``: cross-entropy on ``label``, and the batch accuracy."""
    loss = cross_entropy(outputs, batch["label"])
    return loss, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(outputs, -1) == batch["label"])}


def train_step(state: TrainState, batch, *, model, tx, mask, frozen_bn: FrozenSet[str], seed: int = 0,
               preprocess=None, param_fn=None, grad_accum: int = 1, skip_nonfinite: bool = False, loss_fn=None,
               accum_in_loop: Optional[bool] = None):
    """One optimisation step on the trainable subtree; returns ``(state, metrics)``.

    ``preprocess(batch, rng)`` (e.g. on-device augmentation) runs first, seeded from the step.
    ``param_fn(params)`` maps the trained pytree to the model's (e.g. folds LoRA adapters in).
    ``grad_accum=k`` splits the (already sharded) global batch into k equal micro-batches and
    averages their gradients: one update equal to the whole batch's. ``accum_in_loop`` runs
    the micro-batches in a ``lax.scan`` (1/k of the activation memory); the default does so
    except on CPU, where XLA runs convolutions inside a loop so slowly (a ResNet-18 step 18×
    slower here) that they are unrolled: the same numbers at full speed, without the memory
    saving. BatchNorms in training mode see micro-batch statistics and update their running
    averages once per micro-batch (as accumulation in PyTorch does).
    ``skip_nonfinite`` keeps the old state (params, optimizer, BatchNorm statistics) when the
    loss or the gradient norm is not finite; the step counter still advances with the data.
    ``loss_fn(outputs, batch, step) -> (loss, metrics)`` turns the model's outputs (logits, or a
    dict for multi-head models) into the loss; default: cross-entropy (distillation, multi-task
    and DANN bring their own).
    """
    objective = loss_fn or classification_loss
    trainable, frozen = split_trainable(state.params, mask)
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), state.step)
    if preprocess is not None:
        batch = preprocess(batch, jax.random.fold_in(rng, 1))

    def compute_loss(trainable_params, batch_stats, batch, rng):
        args, kwargs = model_inputs(batch)
        params = join(trainable_params, frozen)
        variables = {"params": param_fn(params) if param_fn else params, "batch_stats": batch_stats}
        with batchnorm_in_inference_mode(frozen_bn):
            outputs, new_vars = model.apply(variables, *args, train=True, **kwargs,
                                            mutable=["batch_stats"], rngs={"dropout": rng})
        loss, metrics = objective(outputs, batch, state.step)
        return loss, (metrics, new_vars.get("batch_stats", {}) or batch_stats)

    grad_fn = jax.value_and_grad(compute_loss, has_aux=True)
    if grad_accum == 1:
        (loss, (metrics, batch_stats)), grads = grad_fn(trainable, state.batch_stats, batch, rng)
    else:
        in_loop = jax.default_backend() != "cpu" if accum_in_loop is None else accum_in_loop
        loss, metrics, batch_stats, grads = accumulate_gradients(grad_fn, trainable, state.batch_stats, batch,
                                                                rng, grad_accum, in_loop)
    # multi_transform wants a full tree; the frozen group's set_to_zero ignores these zeros.
    zeros = {k: jnp.zeros_like(v) for k, v in frozen.items()}
    updates, opt_state = tx.update(join(grads, zeros), state.opt_state, state.params)
    new_trainable = optax.apply_updates(trainable, split_trainable(updates, mask)[0])
    new_state = state.replace(step=state.step + 1, params=join(new_trainable, frozen),
                              batch_stats=batch_stats, opt_state=opt_state)
    grad_norm = optax.tree.norm(grads)
    metrics = {**metrics, "grad_norm": grad_norm}
    if skip_nonfinite:
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        kept = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
        new_state = kept.replace(step=new_state.step)
        metrics["skipped"] = 1 - ok.astype(jnp.int32)
    return new_state, metrics


def micro_batches(batch, k: int):
    """``(B, ...)`` leaves -> ``(k, B/k, ...)``; micro-batch i holds examples i, k+i, 2k+i, …

    Interleaving keeps each device's rows on that device: a batch sharded in contiguous
    blocks over ``data`` stays sharded on the second axis, so no data moves.
    """
    return jax.tree.map(lambda x: jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1), batch)


def accumulate_gradients(grad_fn, trainable, batch_stats, batch, rng, k: int, in_loop: bool = True):
    """Mean loss, metrics and gradients over k micro-batches: in a loop, or unrolled."""

    def body(carry, xs):
        grad_sum, loss_sum, stats = carry
        i, micro = xs
        (loss, (metrics, stats)), grads = grad_fn(trainable, stats, micro, jax.random.fold_in(rng, i))
        return (jax.tree.map(jnp.add, grad_sum, grads), loss_sum + loss, stats), metrics

    init = (jax.tree.map(jnp.zeros_like, trainable), jnp.zeros((), jnp.float32), batch_stats)
    (grad_sum, loss_sum, batch_stats), metrics = jax.lax.scan(body, init, (jnp.arange(k), micro_batches(batch, k)),
                                                              unroll=1 if in_loop else True)
    return loss_sum / k, jax.tree.map(lambda m: m.mean(0), metrics), batch_stats, jax.tree.map(lambda g: g / k, grad_sum)


def eval_step(variables, batch, *, model, preprocess=None):
    """Class predictions for a batch (inference mode); ``preprocess(batch)`` runs first.

    A model returning a dict is read at ``logits`` (e.g. DANN's class head)."""
    if preprocess is not None:
        batch = preprocess(batch)
    args, kwargs = model_inputs(batch)
    outputs = model.apply(variables, *args, train=False, **kwargs)
    return jnp.argmax(outputs["logits"] if isinstance(outputs, dict) else outputs, axis=-1)


# --- placement on devices -------------------------------------------------------------------

MESH_AXES = ("data", "fsdp")
FSDP_MIN_ELEMENTS = 2 ** 14  # arrays smaller than this (64 KiB in float32) stay whole on every device


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
    compiled = jitted.lower(abstract_state, abstract(batch, data_sharding(mesh))).compile()
    return compiled, time.perf_counter() - start, flops_of(compiled)


def flops_of(compiled) -> float:
    """XLA's own FLOP count for a compiled computation (0 when the backend gives none)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def make_train_step(model, tx, mask, frozen_bn, seed: int = 0, preprocess=None, param_fn=None, grad_accum: int = 1,
                    skip_nonfinite: bool = False, loss_fn=None, accum_in_loop: Optional[bool] = None):
    return functools.partial(train_step, model=model, tx=tx, mask=mask, frozen_bn=frozen_bn, seed=seed,
                             preprocess=preprocess, param_fn=param_fn, grad_accum=grad_accum,
                             skip_nonfinite=skip_nonfinite, loss_fn=loss_fn, accum_in_loop=accum_in_loop)
