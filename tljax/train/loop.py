"""The one place that ties config, data, model, strategy, optimizer, checkpoints and metrics.

``fit`` trains one model with one strategy in one workdir and returns its summary;
``run`` is the main job: optional source pre-training, the configured strategy, then the
strategies listed in ``config.compare``, and a table of their target accuracies.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Optional

import jax
import jax.experimental.multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from tljax import checkpoint, data, models, optim, strategies
from tljax import params as P
from tljax.metrics import classification_metrics
from tljax.train import step as S


def build_model(config, num_classes):
    return models.create(config.arch, num_classes, **config.get("model", {}))


def init_variables(model, example_batch, seed: int):
    args, kwargs = S.model_inputs(jax.tree.map(lambda x: x[:1], example_batch))
    variables = model.init(jax.random.PRNGKey(seed), *args, train=False, **kwargs)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def initial_state(config, model, example_batch, pretrained: Optional[Dict], strategy):
    """Fresh variables, strictly merged with the pretrained ones when the strategy loads them."""
    variables = init_variables(model, example_batch, config.seed)
    if pretrained is not None and strategy.load_pretrained:
        variables = P.merge_pretrained(variables, pretrained, dont_load=config.dont_load)
    return variables


def evaluate(model, variables, split, batch_size: int, mesh, num_classes: int) -> Dict[str, Any]:
    """Metrics on a whole split, batches padded to the mesh and padding dropped."""
    predict = jax.jit(lambda v, b: S.eval_step(v, b, model=model))
    predictions = []
    for batch in tqdm(data.batching.eval_batches(split, batch_size), desc="eval", leave=False,
                      total=-(-len(split["label"]) // batch_size)):
        mask = batch.pop("mask").astype(bool)
        out = np.asarray(jax.experimental.multihost_utils.process_allgather(
            predict(variables, S.shard_batch(batch, mesh)), tiled=True))
        predictions.append(out[mask])
    return classification_metrics(split["label"], np.concatenate(predictions), num_classes)


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``; drops lines past a resumed step."""

    def __init__(self, path: str, resume_step: int):
        self.path = path
        self.enabled = jax.process_index() == 0
        if self.enabled and os.path.exists(path):
            with open(path) as f:
                kept = [line for line in f if json.loads(line).get("step", 0) <= resume_step]
            with open(path, "w") as f:
                f.writelines(kept)

    def write(self, **record):
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def fit(config, split_train, split_test, num_classes: int, workdir: str, strategy_spec: str,
        pretrained: Optional[Dict] = None) -> Dict[str, Any]:
    """Trains ``config.arch`` with one strategy; resumes from ``workdir/ckpt``; writes summary.json."""
    os.makedirs(workdir, exist_ok=True)
    strategy = strategies.get(strategy_spec)
    mesh = S.make_mesh()
    S.check_global_batch(config.batch_size, mesh)
    model = build_model(config, num_classes)
    example = data.batching.train_batch(split_train, config.batch_size, 0, config.seed)
    variables = initial_state(config, model, example, pretrained, strategy)
    labels = strategies.labels_from_rules(variables["params"], strategy.rules)
    mask = strategies.trainable_mask(labels)
    tx = optim.make_optimizer(config, labels, config.num_steps)
    state = S.TrainState(step=jnp.asarray(0, jnp.int32), params=variables["params"],
                         batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]))
    state = jax.device_put(state, S.replicated(mesh))

    meta = {"arch": config.arch, "strategy": strategy.name, "num_classes": num_classes}
    mngr = checkpoint.manager(os.path.join(workdir, "ckpt"))
    state = checkpoint.restore_latest(mngr, state, S.replicated(mesh), **meta) or state
    start_step = int(state.step)
    log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), start_step)
    frozen_before = jax.device_get(S.split_trainable(state.params, mask)[1])

    bn_frozen = frozenset() if config.get("frozen_bn_train", False) else S.frozen_batchnorms(state.batch_stats, mask)
    step_fn = S.make_train_step(model, tx, mask, bn_frozen, config.seed)
    compiled, compile_seconds, flops = S.compile_train_step(step_fn, state, S.shard_batch(example, mesh), mesh)

    step_times = []
    bar = tqdm(range(start_step, config.num_steps), initial=start_step, total=config.num_steps,
               desc=f"{strategy.name}", disable=jax.process_index() != 0)
    for step in bar:
        batch = data.batching.train_batch(split_train, config.batch_size, step, config.seed,
                                          jax.process_index(), jax.process_count())
        start = time.perf_counter()
        state, metrics = compiled(state, S.shard_batch(batch, mesh))
        metrics = jax.device_get(metrics)
        step_times.append(time.perf_counter() - start)
        done = step + 1
        if done % config.log_every == 0 or done == config.num_steps:
            bar.set_postfix(loss=f"{metrics['loss']:.3f}")
            log.write(step=done, **{k: float(v) for k, v in metrics.items()})
        if config.ckpt_every and done % config.ckpt_every == 0 and done < config.num_steps:
            checkpoint.save(mngr, state, **meta)
    if int(state.step) > start_step or mngr.latest_step() is None:
        checkpoint.save(mngr, state, **meta)

    check_frozen_unchanged(frozen_before, S.split_trainable(state.params, mask)[1])
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    results = evaluate(model, variables, split_test, config.eval_batch_size, mesh, num_classes)
    summary = {
        "strategy": strategy.name, **results,
        "trainable_params": P.count(S.split_trainable(state.params, mask)[0]),
        "total_params": P.count(state.params),
        "opt_state_floats": opt_state_floats(state.opt_state),
        "train_seconds": float(sum(step_times)),
        "compile_seconds": compile_seconds,
        "step_ms_median": float(np.median(step_times) * 1e3) if step_times else None,
        "flops_per_step": flops,
        "num_steps": config.num_steps,
        "resumed_from_step": start_step,
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        "train_examples": int(len(split_train["label"])),
        "test_examples": int(len(split_test["label"])),
    }
    log.write(step=int(state.step), **{f"eval_{k}": v for k, v in results.items() if k != "confusion"})
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    return {"summary": summary, "variables": variables}


def opt_state_floats(opt_state) -> int:
    """Floats held by the optimizer (step counters are integers and do not count)."""
    return int(sum(np.size(x) for x in jax.tree.leaves(opt_state) if jnp.issubdtype(x.dtype, jnp.floating)))


def check_frozen_unchanged(before, after) -> None:
    changed = [k for k in before if not np.array_equal(np.asarray(before[k]), np.asarray(after[k]))]
    if changed:
        raise AssertionError(f"frozen parameters changed during training: {changed[:5]}")


def source_config(config) -> ml_collections.ConfigDict:
    """The target config with ``config.source``'s fields on top: the pre-training run."""
    merged = {k: v for k, v in config.to_dict().items() if k not in ("source", "compare")}
    merged.update(config.source.to_dict())
    return ml_collections.ConfigDict(merged)


def run(config, workdir: str) -> Dict[str, Dict[str, Any]]:
    """The main job. Returns ``{strategy: summary}``; writes ``workdir/summary.json`` and more."""
    check_workdir(workdir)
    pretrained = None
    if config.get("source"):
        src = source_config(config)
        train, test, info = data.load_splits(src.data, src.seed)
        pretrained = fit(src, train, test, info["num_classes"], os.path.join(workdir, "source"),
                         "scratch")["variables"]
        pretrained = jax.device_get(pretrained)
    train, test, info = data.load_splits(config.data, config.seed)
    summaries = {config.strategy: fit(config, train, test, info["num_classes"], workdir, config.strategy,
                                      pretrained)["summary"]}
    for spec in config.get("compare", ()):
        folder = os.path.join(workdir, "compare", spec.replace("/", "_").replace(":", "_"))
        summaries[spec] = fit(config, train, test, info["num_classes"], folder, spec, pretrained)["summary"]
    if jax.process_index() == 0:
        print(table(summaries))
    return summaries


def check_workdir(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, ".write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise SystemExit(f"workdir {workdir!r} is not writable ({e}); pick another --workdir") from None


def table(summaries: Dict[str, Dict[str, Any]]) -> str:
    rows = ["| strategy | accuracy | f1_macro | trainable params | opt state floats | train s | step ms |",
            "|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        rows.append(f"| {name} | {s['accuracy']:.3f} | {s['f1_macro']:.3f} | {s['trainable_params']:,} | "
                    f"{s['opt_state_floats']:,} | {s['train_seconds']:.1f} | {s['step_ms_median'] or 0:.1f} |")
    return "\n".join(rows)
