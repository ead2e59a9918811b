"""``fit``: one model, one strategy, one workdir — the training loop and its summary.

It ties data batches, the strategy's optimizer, the compiled step, checkpoints and metrics
together; ``tljax.train.job`` decides which models and strategies to fit.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Dict, Optional

import jax
import jax.experimental.multihost_utils
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from tljax import checkpoint, data, evaluate, lora, models, optim, strategies
from tljax import params as P
from tljax.metrics import classification_metrics
from tljax.train import faults, host_memory, report
from tljax.train import devices as D
from tljax.train import step as S


def model_overrides(config) -> Dict[str, Any]:
    """``config.model`` plus the compute ``config.dtype`` (parameters stay float32) and ``config.remat``."""
    dtype = config.get("dtype", "float32")
    return {**config.get("model", {}), **({"dtype": jnp.dtype(dtype)} if dtype != "float32" else {}),
            **({"remat": True} if config.get("remat", False) else {})}


def build_model(config, num_classes):
    return models.create(config.arch, num_classes, **model_overrides(config))


def init_variables(model, example_batch, seed: int):
    args, kwargs = S.model_inputs(jax.tree.map(lambda x: x[:1], example_batch))
    init = jax.jit(lambda rng, a, kw: model.init(rng, *a, train=False, **kw))  # eagerly: one compile per op
    variables = init(jax.random.PRNGKey(seed), args, kwargs)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def initial_state(config, model, example_batch, pretrained: Optional[Dict], strategy):
    """Fresh variables, strictly merged with the pretrained ones when the strategy loads them."""
    variables = init_variables(model, example_batch, config.seed)
    if pretrained is not None and strategy.load_pretrained:
        variables = {"batch_stats": {}, **P.merge_pretrained(variables, pretrained, dont_load=config.dont_load)}
    return variables


def evaluate_split(model, variables, split, batch_size: int, mesh, num_classes: int, preprocess=None,
                   buckets=()) -> Dict[str, Any]:
    """Metrics on a whole split: each process reads its share, padding is masked out."""
    predict = jax.jit(lambda v, b: S.eval_step(v, b, model=model, preprocess=preprocess))
    predictions, labels = evaluate.apply_to_split(predict, variables, split, batch_size, mesh, buckets)
    return classification_metrics(labels, predictions, num_classes)


def shape_key(batch) -> tuple:
    """Batches with equal keys, shapes and dtypes share one compiled train step."""
    return tuple(sorted((k, np.shape(v), str(np.asarray(v).dtype)) for k, v in batch.items()))


def train_batches(config, split, buckets, state=None):
    """This process's share of each global train batch, resumable from ``state``."""
    return data.pipeline.train_iterator(split, config.batch_size, config.seed, jax.process_index(),
                                        jax.process_count(), buckets, num_threads=config.data.get("num_threads", 4),
                                        prefetch=config.data.get("prefetch", 4), state=state)




def fit(config, split_train, split_test, num_classes: int, workdir: str, strategy_spec: str,
        pretrained: Optional[Dict] = None, info: Optional[Dict] = None, model=None, loss_fn=None,
        eval_model=None) -> Dict[str, Any]:
    """Trains ``config.arch`` (or ``model``) with one strategy; resumes from ``workdir/ckpt``; writes summary.json.

    ``info`` is ``data.load_splits``'s: text length ``buckets``, label names and skip counts.
    ``loss_fn`` is the train step's hook (``tljax.methods``); ``eval_model`` (default ``model``)
    reads the test split, e.g. one task's head of a multi-task model.
    """
    os.makedirs(workdir, exist_ok=True)
    info = info or {}
    buckets = info.get("buckets", ())
    strategy = strategies.get(strategy_spec)
    mesh = D.make_mesh(config.get("mesh"))
    D.check_global_batch(config.batch_size, mesh)
    model = model if model is not None else build_model(config, num_classes)
    train_pre, eval_pre = data.augment.make_preprocess(config.get("augment"))
    example = data.pipeline.train_dataset(split_train, config.batch_size, config.seed, jax.process_index(),
                                          jax.process_count(), buckets)[0]
    variables = initial_state(config, model, eval_pre(example) if eval_pre else example, pretrained, strategy)
    epoch_steps = optim.steps_per_epoch(data.pipeline.num_examples(split_train), config.batch_size)
    state, tx, mask, param_fn = prepare(config, strategy, variables, epoch_steps)
    shardings = D.state_sharding(state, mesh)  # replicated, or split over config.mesh's fsdp axis
    state = jax.device_put(state, shardings)

    meta = {"arch": config.arch, "strategy": strategy.name, "num_classes": num_classes}
    mngr = faults.checkpoint_manager(os.path.join(workdir, "ckpt"))  # unfinished writes are set aside
    restored, data_state = faults.restore_latest_good(mngr, state, shardings, **meta)  # skips corrupt ones
    state = restored or state
    start_step = int(state.step)
    # grain's random-access iterator state is the next batch index; older checkpoints saved none
    batches = train_batches(config, split_train, buckets,
                            data_state or ({"next_index": start_step} if start_step else None))
    log = report.MetricsLog(os.path.join(workdir, "metrics.jsonl"), start_step)
    frozen_before = D.to_host(S.split_trainable(state.params, mask)[1])

    bn_frozen = frozenset() if config.get("frozen_bn_train", False) else S.frozen_batchnorms(state.batch_stats, mask)
    guard = faults.NanGuard(config.get("nan_policy", "stop"), split_train, config.batch_size, config.seed, mngr)
    D.check_grad_accum(config.batch_size, config.get("grad_accum", 1), mesh)
    step_fn = S.make_train_step(model, tx, mask, bn_frozen, config.seed, preprocess=train_pre, param_fn=param_fn,
                                loss_fn=loss_fn, grad_accum=config.get("grad_accum", 1), skip_nonfinite=guard.skip)
    compiled, compile_seconds, flops = D.compile_train_step(step_fn, state, D.shard_batch(example, mesh), mesh,
                                                            shardings)
    compiled_steps = {shape_key(example): compiled}  # text length buckets: one compiled step per shape

    step_times = []
    bar = tqdm(range(start_step, config.num_steps), initial=start_step, total=config.num_steps,
               desc=f"{strategy.name}", disable=jax.process_index() != 0)
    for step in bar:
        batch = next(batches)
        if shape_key(batch) not in compiled_steps:
            compiled_steps[shape_key(batch)], seconds, _ = D.compile_train_step(
                step_fn, state, D.shard_batch(batch, mesh), mesh, shardings)
            compile_seconds += seconds
        start = time.perf_counter()
        state, metrics = compiled_steps[shape_key(batch)](state, D.shard_batch(batch, mesh))
        metrics = jax.device_get(metrics)
        step_times.append(time.perf_counter() - start)
        guard.check(metrics, step)  # nan_policy: stop (raises, saves nothing) or count the skipped update
        done = step + 1
        if done % config.log_every == 0 or done == config.num_steps:
            bar.set_postfix(loss=f"{metrics['loss']:.3f}")
            log.write(step=done, **{k: float(v) for k, v in metrics.items()})
        if config.ckpt_every and done % config.ckpt_every == 0 and done < config.num_steps:
            checkpoint.save(mngr, state, batches.get_state(), **meta)
        if done == config.get("stop_at_step", 0):
            break
    if mngr.latest_step() != int(state.step):
        checkpoint.save(mngr, state, batches.get_state(), **meta)
    if int(state.step) < config.num_steps:  # asked to stop early, as if pre-empted
        print(f"stopped at step {int(state.step)} of {config.num_steps} (config.stop_at_step); "
              f"rerun the same command to resume from {workdir}/ckpt")
        return {"summary": None, "variables": None}

    check_frozen_unchanged(frozen_before, D.to_host(S.split_trainable(state.params, mask)[1]))
    variables = {"params": param_fn(state.params) if param_fn else state.params, "batch_stats": state.batch_stats}
    results = evaluate_split(eval_model or model, variables, split_test, config.eval_batch_size, mesh, num_classes,
                             eval_pre, buckets)
    summary = {
        "strategy": strategy.name, **results,
        "trainable_params": P.count(S.split_trainable(state.params, mask)[0]),
        "total_params": P.count(state.params),
        "opt_state_floats": opt_state_floats(state.opt_state),
        "state_mb_per_device": D.bytes_on_device(state) / 2 ** 20,  # params + optimizer + BN statistics
        "train_seconds": float(sum(step_times)),
        "compile_seconds": compile_seconds,
        "step_ms_median": float(np.median(step_times) * 1e3) if step_times else None,
        "flops_per_step": flops,
        "num_steps": config.num_steps,
        "batch_size": config.batch_size,
        "resumed_from_step": start_step,
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        "train_examples": data.pipeline.num_examples(split_train),
        "test_examples": data.pipeline.num_examples(split_test),
        "label_names": info.get("label_names"),
        "skipped_examples": info.get("skipped_examples", 0),
        "compiled_shapes": len(compiled_steps),
        **guard.summary(),
        "dtype": config.get("dtype", "float32"),
        "grad_accum": config.get("grad_accum", 1),
        "remat": config.get("remat", False),
        "host_malloc": host_memory.runs_on(),
        "compilation_cache": D.compilation_cache_dir(),
        **report.memory_usage(),
    }
    log.write(step=int(state.step), **{f"eval_{k}": v for k, v in results.items() if k != "confusion"})
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    return {"summary": summary, "variables": variables}


def prepare(config, strategy, variables, epoch_steps: int):
    """The strategy applied to fresh variables: ``(state, tx, trainable mask, param_fn)``.

    LoRA adds adapters to the pytree and a ``param_fn`` folding them in; the mask also
    freezes what ``config.schedule`` maps to None.
    """
    params, param_fn = variables["params"], None
    if strategy.lora:
        params = lora.add_adapters(params, strategy.lora["rank"], config.seed, strategy.lora["targets"])
        param_fn = functools.partial(lora.merge, scale=strategy.lora["alpha"] / strategy.lora["rank"])
    labels = strategies.labels_for(strategy, params)
    tx, groups = optim.make_optimizer(config, strategy, labels, config.num_steps, epoch_steps)
    state = S.TrainState(step=jnp.asarray(0, jnp.int32), params=params, batch_stats=variables["batch_stats"],
                         opt_state=tx.init(params))
    return state, tx, strategies.trainable_mask(groups), param_fn


def opt_state_floats(opt_state) -> int:
    """Floats held by the optimizer (step counters are integers and do not count)."""
    return int(sum(np.size(x) for x in jax.tree.leaves(opt_state) if jnp.issubdtype(x.dtype, jnp.floating)))


def check_frozen_unchanged(before, after) -> None:
    changed = [k for k in before if not np.array_equal(np.asarray(before[k]), np.asarray(after[k]))]
    if changed:
        raise AssertionError(f"frozen parameters changed during training: {changed[:5]}")
