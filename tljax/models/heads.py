"""Heads beyond one linear layer: several task heads on one trunk, and DANN's domain branch.

Both keep tljax's parameter layout (``backbone/…``, ``head/…``) so strategies such as
``linear_probe`` (``head/.*`` trainable) work unchanged. Nothing here knows about losses.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp


@jax.custom_vjp
def grad_reverse(x, lam):
    """Identity forward; the gradient is multiplied by ``-lam`` backward (Ganin & Lempitsky 2015)."""
    return x


def _reverse_fwd(x, lam):
    return x, lam


def _reverse_bwd(lam, g):
    return jax.tree.map(lambda t: -lam * t, g), jnp.zeros_like(lam)


grad_reverse.defvjp(_reverse_fwd, _reverse_bwd)


class TaskHeads(nn.Module):
    """One linear head per task, ``head/<task>/…``; ``only`` builds just that task's head."""

    sizes: Tuple[Tuple[str, int], ...]
    only: Optional[str] = None

    @nn.compact
    def __call__(self, features):
        return {name: nn.Dense(n, name=name)(features) for name, n in self.sizes if self.only in (None, name)}


class MultiTask(nn.Module):
    """A shared trunk and one head per task: a dict of logits, or one task's logits when ``task`` is set."""

    backbone: nn.Module
    sizes: Tuple[Tuple[str, int], ...]
    task: Optional[str] = None

    @nn.compact
    def __call__(self, x, train: bool = False, **kwargs: Any):
        out = TaskHeads(tuple(self.sizes), self.task, name="head")(self.backbone(x, train=train, **kwargs))
        return out[self.task] if self.task else out


class DomainAdversarial(nn.Module):
    """Class head plus a domain classifier behind a gradient-reversal layer (DANN).

    Returns ``logits``, ``domain_logits`` (through the reversal, scaled by ``grl_lambda``)
    and ``domain_logits_detached`` (the same head on stopped features): a loss mixing the two
    by a traced λ gives the domain head its full gradient and the trunk ``-λ`` of it.
    """

    backbone: nn.Module
    num_classes: int
    num_domains: int = 2
    hidden: int = 64
    grl_lambda: float = 1.0

    @nn.compact
    def __call__(self, x, train: bool = False, **kwargs: Any):
        features = self.backbone(x, train=train, **kwargs)
        logits = nn.Dense(self.num_classes, name="head")(features)
        domain = DomainHead(self.hidden, self.num_domains, name="domain_head")
        return {"logits": logits,
                "domain_logits": domain(grad_reverse(features, jnp.float32(self.grl_lambda))),
                "domain_logits_detached": domain(jax.lax.stop_gradient(features))}


class DomainHead(nn.Module):
    hidden: int
    num_domains: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.num_domains, name="out")(nn.relu(nn.Dense(self.hidden, name="hidden")(x)))


__all__ = ["grad_reverse", "TaskHeads", "MultiTask", "DomainAdversarial", "DomainHead"]
