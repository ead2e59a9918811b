"""Pure ``train_step(state, batch)`` / ``eval_step`` (placed and compiled by ``tljax.train.devices``).

The step knows nothing about where weights came from or how data was read. It
differentiates only the trainable subtree (the frozen one is closed over, so XLA never
computes its gradients), runs frozen BatchNorms in inference mode, and leaves frozen
parameters bit-identical.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, FrozenSet, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from tljax import params as P
from tljax.losses import classification_loss


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


def train_step(state: TrainState, batch, *, model, tx, mask, frozen_bn: FrozenSet[str], seed: int = 0,
               preprocess=None, param_fn=None, grad_accum: int = 1, skip_nonfinite: bool = False, loss_fn=None,
               accum_in_loop: Optional[bool] = None):
    """One optimisation step on the trainable subtree; returns ``(state, metrics)``.

    ``preprocess(batch, rng)`` (e.g. on-device augmentation) runs first, seeded from the step.
    ``param_fn(params)`` maps the trained pytree to the model's (e.g. folds LoRA adapters in).
    ``grad_accum=k`` splits the (already sharded) global batch into k equal micro-batches and
    averages their gradients: one update equal to the whole batch's. ``accum_in_loop`` runs
    the micro-batches in a ``lax.scan`` (1/k of the activation memory); the default does so
    except on CPU, where XLA runs convolutions inside a loop so slowly (a ResNet-18 step 18–22×
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


def eval_step(variables, batch, *, model, preprocess=None, logits: bool = False):
    """Class predictions for a batch (inference mode), or the ``logits``; ``preprocess(batch)``
    runs first. A model returning a dict is read at ``logits`` (e.g. DANN's class head)."""
    if preprocess is not None:
        batch = preprocess(batch)
    args, kwargs = model_inputs(batch)
    outputs = model.apply(variables, *args, train=False, **kwargs)
    outputs = outputs["logits"] if isinstance(outputs, dict) else outputs
    return outputs if logits else jnp.argmax(outputs, axis=-1)


def make_train_step(model, tx, mask, frozen_bn, seed: int = 0, preprocess=None, param_fn=None, grad_accum: int = 1,
                    skip_nonfinite: bool = False, loss_fn=None, accum_in_loop: Optional[bool] = None):
    return functools.partial(train_step, model=model, tx=tx, mask=mask, frozen_bn=frozen_bn, seed=seed,
                             preprocess=preprocess, param_fn=param_fn, grad_accum=grad_accum,
                             skip_nonfinite=skip_nonfinite, loss_fn=loss_fn, accum_in_loop=accum_in_loop)
