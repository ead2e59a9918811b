"""Knowledge distillation on sklearn digits: a ResNet teacher → a 4× narrower student.

    python -m tljax.run --config configs/distill_digits.py --workdir runs/distill
    python -m tljax.run --config configs/distill_digits.py --workdir runs/distill_plain --config.distill.alpha=1.0

All 10 classes, ``data.train_examples`` labelled images. The teacher (``distill.teacher``'s
fields over this config) trains first in ``runs/distill/teacher`` (or ``distill.teacher_workdir``:
a finished run there is reused); its logits are cached in the split; the student trains with
α·CE + (1−α)·T²·KL. ``alpha=1.0`` is the same student without distillation (no teacher).
"""

from tljax.defaults import base_config, section


def get_config(arg=None):
    config = base_config()
    config.arch = "resnet_digits"
    config.model = dict(widths=(8, 16, 32))  # the student
    config.data.classes = tuple(range(10))
    config.data.test_fraction = 0.3
    config.data.train_examples = 300
    config.strategy = "scratch"
    config.dont_load = ()
    config.lr = 3e-3
    config.warmup_steps = 10
    config.num_steps = 150
    config.log_every = 25
    config.distill = section("distill", alpha=0.3, temperature=4.0,
                             teacher=dict(model=dict(widths=(32, 64, 128)), num_steps=300))
    if arg == "runlocal":
        config.data.train_examples = 100
        config.num_steps, config.log_every = 6, 3
        config.model.widths = (4, 8, 8)
        config.distill.teacher = dict(model=dict(widths=(8, 8, 16)), num_steps=8)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing")
    return config
