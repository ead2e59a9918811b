"""Multi-task on sklearn digits: digit class (few labels) + parity (many labels) on one ResNet trunk.

    python -m tljax.run --config configs/multitask_digits.py --workdir runs/multitask
    python -m tljax.run --config configs/multitask_digits.py --workdir runs/single --config.tasks.parity.ratio=0.0

Both tasks split the same images with the same seed (so no test image is trained on by either);
the digit task keeps ``train_examples`` labels, parity all. Batches mix the tasks by ``ratio``;
the loss is Σ weight·CE. ``parity.ratio=0`` is the single-task baseline at the same budget.
"""

from tljax.defaults import base_config, task, variant

DIGITS = dict(source="digits", classes=tuple(range(10)), test_fraction=0.3)


def get_config(arg=None):
    config = base_config()
    config.arch, config.model = "resnet_digits", dict(widths=(16, 32, 64))
    config.data.classes = DIGITS["classes"]  # unused by the method; the tasks have their own data
    config.tasks = dict(
        digit=task(data=dict(DIGITS, train_examples=100), ratio=0.5),
        parity=task(data=dict(DIGITS), ratio=0.5, label_map=(0, 1, 0, 1, 0, 1, 0, 1, 0, 1)))
    config.strategy, config.dont_load = "scratch", ()
    config.lr, config.warmup_steps, config.num_steps, config.log_every = 3e-3, 10, 200, 25
    return variant(config, arg, {"model.widths": (4, 8, 8), "num_steps": 6, "log_every": 3})
