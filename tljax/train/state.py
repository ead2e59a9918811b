"""From a config to a model and its first train state: build the model, initialise or load its
variables, apply the strategy (LoRA adapters, optimizer groups, trainable mask).

The loop, the methods and the scripts build models here, so a config means the same model
everywhere.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from tljax import lora, models, optim, strategies
from tljax import params as P
from tljax.train import step as S


def model_overrides(config, cpu_kernels: bool = False) -> Dict[str, Any]:
    """``config.model`` plus the compute ``config.dtype`` (parameters stay float32), ``config.remat``
    and whether the XLA:CPU kernels run (resolved from ``config.cpu_kernels`` by the caller)."""
    return {**config.model, **({"dtype": jnp.dtype(config.dtype)} if config.dtype != "float32" else {}),
            **({"remat": True} if config.remat else {}), **({"cpu_kernels": True} if cpu_kernels else {})}


def build_model(config, num_classes: Optional[int], cpu_kernels: bool = False):
    """``config.arch`` with a ``num_classes``-way head (pooled features when None)."""
    return models.create(config.arch, num_classes, **model_overrides(config, cpu_kernels))


def init_variables(model, example_batch, seed: int) -> Dict[str, Any]:
    """``{'params', 'batch_stats'}`` of ``model`` for inputs shaped like ``example_batch``."""
    args, kwargs = S.model_inputs(jax.tree.map(lambda x: x[:1], example_batch))
    init = jax.jit(lambda rng, a, kw: model.init(rng, *a, train=False, **kw))  # eagerly: one compile per op
    variables = init(jax.random.PRNGKey(seed), args, kwargs)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def param_shapes(model, example_batch, seed: int = 0) -> Dict[str, list]:
    """``{path: shape}`` of the model's parameters, without computing them."""
    tree = jax.eval_shape(lambda: init_variables(model, example_batch, seed))["params"]
    return {k: list(v.shape) for k, v in P.flatten(tree).items()}


def initial_variables(config, model, example_batch, pretrained: Optional[Dict], strategy) -> Dict[str, Any]:
    """Fresh variables, strictly merged with the pretrained ones when the strategy loads them."""
    variables = init_variables(model, example_batch, config.seed)
    if pretrained is not None and strategy.load_pretrained:
        variables = {"batch_stats": {}, **P.merge_pretrained(variables, pretrained, dont_load=config.dont_load)}
    return variables


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


def check_plan(config, model, example_batch, strategy_specs) -> None:
    """Builds each strategy's groups and optimizer on the model's parameter shapes (no arrays are
    computed), so a freeze regex matching nothing or a schedule table with a gap fails before
    any training, e.g. before a source model is pre-trained."""
    abstract = jax.eval_shape(lambda: init_variables(model, example_batch, config.seed))
    for spec in strategy_specs:
        strategy = strategies.get(spec)
        try:
            jax.eval_shape(lambda v: prepare(config, strategy, v, 1)[0], abstract)
        except ValueError as e:
            raise ValueError(f"config.strategy / compare {spec!r} does not fit {config.arch}: {e}") from None


def check_batch_fits(num_examples: int, batch_size: int, what: str = "training split") -> None:
    """A batch larger than the data would repeat examples within one step."""
    if batch_size > num_examples:
        raise ValueError(f"config.batch_size={batch_size} is larger than the {what} ({num_examples} examples); "
                         f"use --config.batch_size={max(1, num_examples)} or fewer")
