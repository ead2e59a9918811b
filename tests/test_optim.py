"""Optimizer groups: readable names, one optax transform per distinct group, allowed values defined once."""

import jax.numpy as jnp
import pytest

from tljax import defaults, optim, strategies
from tljax.defaults import base_config


def test_group_names_read_as_what_differs():
    params = {"backbone": {"conv": {"kernel": jnp.zeros((3, 3))}}, "head": {"kernel": jnp.zeros((3, 2))}}
    config = base_config()
    config.lr_mults = (("head/.*", 10.0),)
    labels = strategies.labels_for(strategies.get("lp_ft:0.5"), params)
    _, names = optim.make_optimizer(config, strategies.get("lp_ft:0.5"), labels, total_steps=100)
    assert names["head"]["kernel"] == "trainable lr×10"
    assert names["backbone"]["conv"]["kernel"] == "trainable from_step=50"
    labels = strategies.labels_for(strategies.get("linear_probe"), params)
    _, names = optim.make_optimizer(config, strategies.get("linear_probe"), labels, total_steps=100)
    assert names["backbone"]["conv"]["kernel"] == "frozen"


def test_allowed_values_come_from_the_base_config():
    assert optim.OPTIMIZERS is defaults.CHOICES["optimizer"]
    assert optim.LR_SCHEDULES is defaults.CHOICES["lr_schedule"]
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'"):
        optim.make_schedule("step", 1e-3, 10)
