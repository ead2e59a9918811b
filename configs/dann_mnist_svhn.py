"""Domain adaptation (DANN) through TFDS: labelled MNIST → unlabelled SVHN digits.

    python -m tljax.run --config configs/dann_mnist_svhn.py --workdir runs/dann_mnist_svhn
    python -m tljax.run --config configs/dann_mnist_svhn.py --workdir runs/mnist_svhn_source_only \\
        --config.adapt.method=source_only

Needs ``mnist`` and ``svhn_cropped`` prepared for random access (``tfds build mnist svhn_cropped
--file_format=array_record``, or set ``data.data_dir`` and ``adapt.target.data_dir``). Both become
32 × 32 grey images in [0, 1]; the SVHN training split (labels dropped) is the unlabelled target,
its test split the reported ``target_accuracy``; ``source_accuracy`` is MNIST's test split.
MNIST → SVHN is the hard direction (Ganin et al. 2016 report little gain there); swap
``data.source`` and ``adapt.target.source`` for SVHN → MNIST, where DANN is known to help.
"""

from tljax.defaults import base_config, section, variant


def get_config(arg=None):
    config = base_config()
    config.arch, config.model = "resnet_digits", dict(widths=(32, 64, 128))
    config.data.source = "tfds:mnist"
    config.adapt = section("adapt", method="dann", image_size=32, channels=1, hidden=256,
                           target=dict(source="tfds:svhn_cropped"))
    config.strategy, config.dont_load = "scratch", ()
    config.batch_size, config.eval_batch_size, config.warmup_steps = 128, 500, 200
    config.num_steps, config.log_every, config.ckpt_every = 5000, 100, 1000
    return variant(config, arg, {"model.widths": (4, 8, 8), "batch_size": 8, "eval_batch_size": 8, "warmup_steps": 1,
                                 "num_steps": 2, "log_every": 1, "ckpt_every": 0})
