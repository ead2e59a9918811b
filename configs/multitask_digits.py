"""Multi-task on sklearn digits: digit class (few labels) + parity (many labels) on one ResNet trunk.

    python -m tljax.run --config configs/multitask_digits.py --workdir runs/multitask
    python -m tljax.run --config configs/multitask_digits.py --workdir runs/single --config.tasks.parity.ratio=0.0

Both tasks split the same images with the same seed (so no test image is trained on by either);
the digit task keeps ``train_examples`` labels, parity all. Batches mix the tasks by ``ratio``;
the loss is Σ weight·CE. ``parity.ratio=0`` is the single-task baseline at the same budget.
"""

from tljax.defaults import base_config, task

DIGITS = dict(source="digits", classes=tuple(range(10)), test_fraction=0.3)


def get_config(arg=None):
    config = base_config()
    config.arch = "resnet_digits"
    config.model = dict(widths=(16, 32, 64))
    config.data.classes = DIGITS["classes"]  # unused by the method; the tasks have their own data
    config.tasks = dict(
        digit=task(data=dict(DIGITS, train_examples=100), ratio=0.5),
        parity=task(data=dict(DIGITS), ratio=0.5, label_map=(0, 1, 0, 1, 0, 1, 0, 1, 0, 1)))
    config.strategy = "scratch"
    config.dont_load = ()
    config.lr = 3e-3
    config.warmup_steps = 10
    config.num_steps = 200
    config.log_every = 25
    if arg == "runlocal":
        config.model.widths = (4, 8, 8)
        config.num_steps, config.log_every = 6, 3
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing")
    return config
