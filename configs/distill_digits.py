"""Knowledge distillation on sklearn digits: a ResNet teacher → a 4× narrower student.

    python -m tljax.run --config configs/distill_digits.py --workdir runs/distill
    python -m tljax.run --config configs/distill_digits.py --workdir runs/distill_plain --config.distill.alpha=1.0

All 10 classes, ``data.train_examples`` labelled images. The teacher (``distill.teacher``'s
fields over this config) trains first in ``runs/distill/teacher`` (or ``distill.teacher_workdir``:
a finished run there is reused); its logits are cached in the split; the student trains with
α·CE + (1−α)·T²·KL. ``alpha=1.0`` is the same student without distillation (no teacher).
"""

from tljax.defaults import base_config, section, variant


def get_config(arg=None):
    config = base_config()
    config.arch, config.model = "resnet_digits", dict(widths=(8, 16, 32))  # the student
    config.data.classes, config.data.test_fraction, config.data.train_examples = tuple(range(10)), 0.3, 300
    config.strategy, config.dont_load = "scratch", ()
    config.lr, config.warmup_steps, config.num_steps, config.log_every = 3e-3, 10, 150, 25
    config.distill = section("distill", alpha=0.3, temperature=4.0,
                             teacher=dict(model=dict(widths=(32, 64, 128)), num_steps=300))
    return variant(config, arg, {"data.train_examples": 100, "num_steps": 6, "log_every": 3, "model.widths": (4, 8, 8),
                                 "distill.teacher": dict(model=dict(widths=(8, 8, 16)), num_steps=8)})
