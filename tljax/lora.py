"""LoRA as a reparameterisation of the parameter pytree: ``W = W₀ + (α/r)·A·B``.

Adapters live beside the kernel they adapt (``…/query/lora_a``, ``…/query/lora_b``), so
strategies and checkpoints see ordinary paths and no model changes. ``merge`` folds them
into plain weights: for the forward pass and for inference export.
"""

from __future__ import annotations

import re
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from tljax import params as P

DEFAULT_TARGETS = (r"backbone/.*/(query|value)/kernel",  # transformers: attention q, v
                   r"backbone/.*conv\w*/kernel")  # conv nets: every convolution


def target_paths(params, targets: Optional[str]):
    flat = P.flatten(params)
    patterns = [targets] if targets else DEFAULT_TARGETS
    for pattern in patterns:
        found = [k for k, v in flat.items() if re.fullmatch(pattern, k) and np.ndim(v) >= 2]
        if found:
            return found
    raise ValueError(f"LoRA targets {patterns} match no kernel of rank >= 2; paths look like {list(flat)[:3]}")


def add_adapters(params, rank: int, seed: int, targets: Optional[str] = None):
    """Adds ``lora_a`` (random, 1/√in) and ``lora_b`` (zeros) for each target kernel: W unchanged at start."""
    flat = P.flatten(params)
    for i, path in enumerate(target_paths(params, targets)):
        kernel = flat[path]
        fan_in, out = int(np.prod(kernel.shape[:-1])), kernel.shape[-1]
        key = jax.random.fold_in(jax.random.PRNGKey(seed), i)
        module = path.rsplit("/", 1)[0]
        flat[f"{module}/lora_a"] = jax.random.normal(key, (fan_in, rank), jnp.float32) / np.sqrt(fan_in)
        flat[f"{module}/lora_b"] = jnp.zeros((rank, out), jnp.float32)
    return P.unflatten(flat)


def merge(params, scale: float):
    """Plain parameters: each adapted kernel + scale·A·B, adapters removed."""
    flat = P.flatten(params)
    out = {k: v for k, v in flat.items() if not k.endswith(("/lora_a", "/lora_b"))}
    for key in flat:
        if key.endswith("/lora_a"):
            module = key[: -len("/lora_a")]
            kernel = out[f"{module}/kernel"]
            delta = (flat[key] @ flat[f"{module}/lora_b"]) * scale
            out[f"{module}/kernel"] = kernel + delta.reshape(kernel.shape).astype(kernel.dtype)
    return P.unflatten(out)
