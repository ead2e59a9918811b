"""Multi-task on sklearn digits: digit class (few labels) + parity (many labels) on one ResNet trunk.

    python -m tljax.train --config configs/multitask_digits.py --workdir runs/multitask
    python -m tljax.train --config configs/multitask_digits.py --workdir runs/single --config.tasks.parity.ratio=0.0

Both tasks split the same images with the same seed (so no test image is trained on by either);
the digit task keeps ``train_examples`` labels, parity all. Batches mix the tasks by ``ratio``;
the loss is Σ weight·CE. ``parity.ratio=0`` is the single-task baseline at the same budget.
"""

import ml_collections

DIGITS = dict(source="digits", classes=tuple(range(10)), test_fraction=0.3)


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.arch = "resnet_digits"
    config.model = ml_collections.ConfigDict(dict(widths=(16, 32, 64)))
    config.data = ml_collections.ConfigDict(DIGITS)  # unused by the method; kept for the shared fields
    config.tasks = ml_collections.ConfigDict(dict(
        digit=dict(data=dict(DIGITS, train_examples=100), weight=1.0, ratio=0.5),
        parity=dict(data=dict(DIGITS), weight=1.0, ratio=0.5, label_map=(0, 1, 0, 1, 0, 1, 0, 1, 0, 1))))
    config.mixed_examples = 0  # 0: the tasks' training examples summed
    config.strategy = "scratch"
    config.compare = ()
    config.dont_load = ()
    config.optimizer = "adamw"
    config.lr = 3e-3
    config.wd = 1e-4
    config.momentum = 0.9
    config.lr_schedule = "cosine"
    config.warmup_steps = 10
    config.batch_size = 32
    config.eval_batch_size = 256
    config.num_steps = 200
    config.log_every = 25
    config.ckpt_every = 0
    if arg == "runlocal":
        config.model.widths = (4, 8, 8)
        config.num_steps, config.log_every = 6, 3
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing")
    return config
