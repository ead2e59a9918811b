"""Domain adaptation (DANN) on sklearn digits: labelled digits → unlabelled shifted digits.

    python -m tljax.train --config configs/dann_digits.py --workdir runs/dann
    python -m tljax.train --config configs/dann_digits.py --workdir runs/source_only --config.adapt.method=source_only

The source is the labelled training split; the target is the test split's images under
``adapt.shift`` (inverted / rotated / noisy, built in code), half of them unlabelled for
training and half for the reported target accuracy (``source_accuracy``: the same images
unshifted). ``source_only`` trains on the source alone: accuracy without adaptation.
"""

import ml_collections


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.arch = "resnet_digits"
    config.model = ml_collections.ConfigDict(dict(widths=(16, 32, 64)))
    config.data = ml_collections.ConfigDict(dict(source="digits", classes=tuple(range(10)), test_fraction=0.5))
    config.adapt = ml_collections.ConfigDict(dict(method="dann", shift="invert", noise=0.3, gamma=10.0,
                                                  lambda_max=1.0, domain_weight=1.0, hidden=64))
    config.strategy = "scratch"
    config.compare = ()
    config.dont_load = ()
    config.optimizer = "adamw"
    config.lr = 3e-3
    config.wd = 1e-4
    config.momentum = 0.9
    config.lr_schedule = "cosine"
    config.warmup_steps = 10
    config.batch_size = 64
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
