"""Domain adaptation (DANN) on sklearn digits: labelled digits → unlabelled shifted digits.

    python -m tljax.run --config configs/dann_digits.py --workdir runs/dann
    python -m tljax.run --config configs/dann_digits.py --workdir runs/source_only --config.adapt.method=source_only

The source is the labelled training split; the target is the test split's images under
``adapt.shift`` (inverted / rotated / noisy, built in code), half of them unlabelled for
training and half for the reported target accuracy (``source_accuracy``: the same images
unshifted). ``source_only`` trains on the source alone: accuracy without adaptation.
"""

from tljax.defaults import base_config, section, variant


def get_config(arg=None):
    config = base_config()
    config.arch, config.model = "resnet_digits", dict(widths=(16, 32, 64))
    config.data.classes, config.data.test_fraction = tuple(range(10)), 0.5
    config.adapt = section("adapt", method="dann", shift="invert")
    config.strategy, config.dont_load = "scratch", ()
    config.lr, config.warmup_steps, config.batch_size = 3e-3, 10, 64
    config.num_steps, config.log_every = 200, 25
    return variant(config, arg, {"model.widths": (4, 8, 8), "num_steps": 6, "log_every": 3})
