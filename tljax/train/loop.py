"""``fit``: one model, one strategy, one workdir — the training loop and its summary.

It ties data batches, the strategy's optimizer, the compiled step, checkpoints and metrics
together, and is the one place that writes ``summary.json``. Which runs make up a job is the
methods' business (``tljax.methods``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable, Dict, Optional

import jax
import numpy as np

from tljax import checkpoint, data, optim, strategies
from tljax import params as P
from tljax.train import devices as D
from tljax.train import faults, host_memory, report
from tljax.train import selection as selection_lib
from tljax.train import state as T
from tljax.train import step as S
from tljax.train.evaluate import evaluate_split
from tljax.train.selection import Selection

RESUME_CHANGES = ("batch_size", "lr")  # may differ on resume with config.allow_resume_changes


@dataclasses.dataclass
class FitResult:
    """What ``fit`` gives back: the summary it wrote and the trained variables (host arrays), or
    ``completed=False`` with neither when the run stopped before ``num_steps`` (resumable)."""

    summary: Optional[Dict[str, Any]]
    variables: Optional[Dict[str, Any]]
    completed: bool


def shape_key(batch) -> tuple:
    """Batches with equal keys, shapes and dtypes share one compiled train step."""
    return tuple(sorted((k, np.shape(v), str(np.asarray(v).dtype)) for k, v in batch.items()))


def train_batches(config, split, buckets, state=None):
    """This process's share of each global train batch, resumable from ``state``."""
    return data.pipeline.train_iterator(split, config.batch_size, config.seed, jax.process_index(),
                                        jax.process_count(), buckets, num_threads=config.data.num_threads,
                                        prefetch=config.data.prefetch, state=state)


def run_meta(config, strategy, num_classes: int) -> Dict[str, Any]:
    """What a checkpoint must match to be resumed by this run (``checkpoint.check_meta``)."""
    return {"arch": config.arch, "strategy": strategy.name, "num_classes": num_classes,
            "optimizer": config.optimizer, "batch_size": config.batch_size, "lr": config.lr}


def fit(config, split_train, split_test, num_classes: int, workdir: str, strategy_spec: str,
        pretrained: Optional[Dict] = None, *, val=None, info: Optional[Dict] = None, model=None, loss_fn=None,
        eval_model=None, extras: Optional[Callable[[Dict, Dict], Dict]] = None) -> FitResult:
    """Trains ``config.arch`` (or ``model``) with one strategy; resumes from ``workdir/ckpt``.

    ``info`` is ``data.load_splits``'s: text length ``buckets``, label names, skip counts and the
    validation split (``val`` overrides it). With a validation split the run evaluates it every
    ``config.eval_every`` steps and at the end, keeps the best variables by ``config.best_metric``
    in ``workdir/ckpt_best``, may stop early (``early_stopping_patience``), and tests the best.
    ``loss_fn`` is the train step's hook (``tljax.methods``); ``eval_model`` (default ``model``)
    reads the test split, e.g. one task's head of a multi-task model; ``extras(variables, summary)``
    adds a method's own figures to the summary before it is written.
    """
    os.makedirs(workdir, exist_ok=True)
    info = info or {}
    buckets = info.get("buckets", ())
    strategy = strategies.get(strategy_spec)
    mesh = D.make_mesh(config.mesh)
    D.check_global_batch(config.batch_size, mesh)
    D.check_grad_accum(config.batch_size, config.grad_accum, mesh)
    T.check_batch_fits(data.pipeline.num_examples(split_train), config.batch_size)
    model = model if model is not None else T.build_model(config, num_classes, D.cpu_kernels_on(config.cpu_kernels, mesh))
    train_pre, eval_pre = data.augment.make_preprocess(config.augment)
    example = data.pipeline.train_dataset(split_train, config.batch_size, config.seed, jax.process_index(),
                                          jax.process_count(), buckets)[0]
    variables = T.initial_variables(config, model, eval_pre(example) if eval_pre else example, pretrained, strategy)
    epoch_steps = optim.steps_per_epoch(data.pipeline.num_examples(split_train), config.batch_size)
    state, tx, mask, param_fn = T.prepare(config, strategy, variables, epoch_steps)
    shardings = D.state_sharding(state, mesh)  # replicated, or split over config.mesh's fsdp axis
    state = jax.device_put(state, shardings)

    meta = run_meta(config, strategy, num_classes)
    mngr = faults.checkpoint_manager(os.path.join(workdir, "ckpt"))  # unfinished writes are set aside
    restored, saved_json, resume_changes = faults.restore_latest_good(
        mngr, state, shardings, meta, RESUME_CHANGES, config.allow_resume_changes)
    state = restored or state
    start_step = int(state.step)
    saved_json = saved_json or {}
    # grain's random-access iterator state is the next batch index; older checkpoints saved none
    batches = train_batches(config, split_train, buckets,
                            saved_json.get("data") or ({"next_index": start_step} if start_step else None))
    val = val if val is not None else info.get("val")
    selection = Selection(config.best_metric, config.best_mode, config.early_stopping_patience,
                          saved_json.get("selection"))
    best = selection_lib.best_manager(workdir, config.best_metric, config.best_mode) if val is not None else None
    log = report.MetricsLog(os.path.join(workdir, "metrics.jsonl"), start_step, config.tensorboard)
    frozen_before = D.to_host(S.split_trainable(state.params, mask)[1])

    bn_frozen = frozenset() if config.frozen_bn_train else S.frozen_batchnorms(state.batch_stats, mask)
    guard = faults.NanGuard(config, split_train, mngr)
    accum_in_loop = {"auto": None, "on": True, "off": False}[config.accum_in_loop]
    step_fn = S.make_train_step(model, tx, mask, bn_frozen, config.seed, preprocess=train_pre, param_fn=param_fn,
                                loss_fn=loss_fn, grad_accum=config.grad_accum, skip_nonfinite=guard.skip,
                                accum_in_loop=accum_in_loop)
    compiled, compile_seconds, flops = D.compile_train_step(step_fn, state, D.shard_batch(example, mesh), mesh,
                                                            shardings)
    compiled_steps = {shape_key(example): compiled}  # text length buckets: one compiled step per shape
    lr_at = optim.make_schedule(config.lr_schedule, config.lr, config.num_steps, config.warmup_steps)
    evaluate_on = functools.partial(evaluate_split, eval_model or model, batch_size=config.eval_batch_size,
                                    mesh=mesh, num_classes=num_classes, preprocess=eval_pre, buckets=buckets)

    def model_variables(params, batch_stats):
        return {"params": param_fn(params) if param_fn else params, "batch_stats": batch_stats}

    def trains_at(saved_step: int) -> bool:
        """Whether checkpoint ``saved_step`` still gives a finite loss and gradient on the batch
        before it (which trained fine): False means its parameters diverged, not the data."""
        saved = checkpoint.restore(mngr, state, shardings, saved_step)
        earlier = data.pipeline.train_dataset(split_train, config.batch_size, config.seed, jax.process_index(),
                                              jax.process_count(), buckets)[max(saved_step - 1, 0)]
        if shape_key(earlier) not in compiled_steps:
            compiled_steps[shape_key(earlier)] = D.compile_train_step(step_fn, saved, D.shard_batch(earlier, mesh),
                                                                      mesh, shardings)[0]
        _, probe = jax.device_get(compiled_steps[shape_key(earlier)](saved, D.shard_batch(earlier, mesh)))
        return bool(np.isfinite(probe["loss"]) and np.isfinite(probe["grad_norm"]))

    def validate(done: int) -> None:
        """Evaluates the validation split; keeps the variables in ckpt_best when they are the best."""
        results = evaluate_on(model_variables(state.params, state.batch_stats), val)
        scores = {k: results[k] for k in ("accuracy", "f1_macro", "loss")}
        if selection.update(done, scores):
            selection_lib.save_best(best, done, {"params": state.params, "batch_stats": state.batch_stats}, scores)
        log.write(step=done, **{f"val_{k}": v for k, v in scores.items()})
        report.say(f"{strategy.name} step {done}: validation {selection.metric} {scores[selection.metric]:.4f} "
                   f"(best {selection.best_value:.4f} at step {selection.best_step})")

    def save():
        faults.check_finite_before_save(state, int(state.step))
        checkpoint.save(mngr, state, batches.get_state(), selection.state() if val is not None else None, **meta)

    step_times = []
    stopped_early = val is not None and selection.should_stop  # resumed after it had stopped early
    last = start_step if stopped_early else config.num_steps
    bar = report.progress(range(start_step, last), start_step, config.num_steps, strategy.name)
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
        guard.check(metrics, step, trains_at)  # nan_policy: stop (raises) or count the skipped update
        done = step + 1
        if done % config.log_every == 0 or done == config.num_steps:
            record = {k: float(v) for k, v in metrics.items()}
            record.update(lr=float(lr_at(step)), examples_per_s=config.batch_size / step_times[-1])
            log.write(step=done, **record)
            report.show(bar, strategy.name, done, config.num_steps, record)
        if val is not None and ((config.eval_every and done % config.eval_every == 0) or done == config.num_steps):
            validate(done)
            stopped_early = selection.should_stop and done < config.num_steps
        if (config.ckpt_every and done % config.ckpt_every == 0 and done < config.num_steps) or stopped_early:
            save()
        if stopped_early:
            report.say(f"{strategy.name}: early stopping at step {done}: {selection.since_best} evaluations without a "
                       f"better validation {selection.metric} (best at step {selection.best_step})")
            break
        if done == config.stop_at_step:
            break
    if mngr.latest_step() != int(state.step):
        save()
    finished = int(state.step) >= config.num_steps or stopped_early
    if not finished:  # asked to stop early, as if pre-empted
        print(f"stopped at step {int(state.step)} of {config.num_steps} (config.stop_at_step); "
              f"rerun the same command to resume from {workdir}/ckpt")
        log.close()
        return FitResult(None, None, completed=False)
    if guard.skipped_batches:
        report.say(f"warning: {len(guard.skipped_batches)} of {config.num_steps - start_step} steps had a non-finite "
                   f"loss and were skipped (nan_policy=skip): batches {guard.skipped_batches[:10]}")

    check_frozen_unchanged(frozen_before, D.to_host(S.split_trainable(state.params, mask)[1]))
    if val is not None and selection.best_step is not None:  # test the chosen checkpoint, not the last one
        chosen = checkpoint.load_params(str(best.directory), selection.best_step)
        variables = model_variables(chosen["params"], chosen.get("batch_stats", {}))
        chosen_step, val_scores = selection.best_step, evaluate_on(variables, val)
    else:
        variables = model_variables(state.params, state.batch_stats)
        chosen_step, val_scores = int(state.step), {}
    results = evaluate_on(variables, split_test)
    summary = {
        "strategy": strategy.name, **results,
        **{f"val_{k}": val_scores[k] for k in ("accuracy", "f1_macro", "loss") if k in val_scores},
        "chosen_step": chosen_step, "best_metric": config.best_metric if val is not None else None,
        "stopped_early": stopped_early, "steps_trained": int(state.step),
        "validation_evaluations": selection.evaluations,
        "val_examples": data.pipeline.num_examples(val) if val is not None else 0,
        **run_figures(config, state, mask, mesh, step_times, compile_seconds, flops, start_step),
        "resume_changes": resume_changes,
        "train_examples": data.pipeline.num_examples(split_train),
        "test_examples": data.pipeline.num_examples(split_test),
        "label_names": info.get("label_names"),
        "skipped_examples": info.get("skipped_examples", 0),
        "compiled_shapes": len(compiled_steps),
        **guard.summary(),
    }
    host_variables = D.to_host(variables)
    summary.update(extras(host_variables, summary) if extras else {})
    log.write(step=int(state.step), **{f"test_{k}": v for k, v in results.items() if k != "confusion"})
    log.close()
    report.write_summary(workdir, summary)
    return FitResult(summary, host_variables, completed=True)


def run_figures(config, state, mask, mesh, step_times, compile_seconds, flops, start_step) -> Dict[str, Any]:
    """What the run cost and ran on: parameters, optimizer floats, times, devices, memory."""
    return {
        "trainable_params": P.count(S.split_trainable(state.params, mask)[0]),
        "total_params": P.count(state.params),
        "opt_state_floats": T.opt_state_floats(state.opt_state),
        "state_mb_per_device": D.bytes_on_device(state) / 2 ** 20,  # params + optimizer + BN statistics
        "train_seconds": float(sum(step_times)),
        "compile_seconds": compile_seconds,
        "step_ms_median": float(np.median(step_times) * 1e3) if step_times else None,
        "flops_per_step": flops,
        "num_steps": config.num_steps,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "resumed_from_step": start_step,
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        "dtype": config.dtype,
        "grad_accum": config.grad_accum,
        "remat": config.remat,
        "cpu_kernels": D.cpu_kernels_on(config.cpu_kernels, mesh),
        "host_malloc": host_memory.runs_on(),
        "compilation_cache": D.compilation_cache_dir(),
        **report.memory_usage(),
    }


def check_frozen_unchanged(before, after) -> None:
    changed = [k for k in before if not np.array_equal(np.asarray(before[k]), np.asarray(after[k]))]
    if changed:
        raise AssertionError(f"frozen parameters changed during training: {changed[:5]}")
