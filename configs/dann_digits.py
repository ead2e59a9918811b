"""Domain adaptation (DANN) on sklearn digits: labelled digits → unlabelled shifted digits.

    python -m tljax.run --config configs/dann_digits.py --workdir runs/dann
    python -m tljax.run --config configs/dann_digits.py --workdir runs/source_only --config.adapt.method=source_only

The source is the labelled training split; the target is the test split's images under
``adapt.shift`` (inverted / rotated / noisy, built in code), half of them unlabelled for
training and half for the reported target accuracy (``source_accuracy``: the same images
unshifted). ``source_only`` trains on the source alone: accuracy without adaptation.
"""

from tljax.defaults import base_config, section


def get_config(arg=None):
    config = base_config()
    config.arch = "resnet_digits"
    config.model = dict(widths=(16, 32, 64))
    config.data.classes = tuple(range(10))
    config.data.test_fraction = 0.5
    config.adapt = section("adapt", method="dann", shift="invert")
    config.strategy = "scratch"
    config.dont_load = ()
    config.lr = 3e-3
    config.warmup_steps = 10
    config.batch_size = 64
    config.num_steps = 200
    config.log_every = 25
    if arg == "runlocal":
        config.model.widths = (4, 8, 8)
        config.num_steps, config.log_every = 6, 3
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing")
    return config
