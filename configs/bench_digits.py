"""Freezing-strategy benchmark on the digits transfer task (offline, sklearn digits).

    python scripts/benchmark_freezing.py --config configs/bench_digits.py --out runs/bench_digits

Every strategy × 2 seeds on digits 0–4 → 5–9 with 10 labels per class: the demo's model and
optimizer (``configs/digits_transfer.py``) at a 120-step budget, so the 24 cells fit in 10
minutes on 2 CPU cores. Expected: full fine-tuning above scratch; the cached linear probe
at the plain one's accuracy, more than 10× faster per epoch (see README for the table).
"""

import os

from tljax.config import load_file
from tljax.defaults import section

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config():
    config = load_file(os.path.join(HERE, "digits_transfer.py"))
    config.compare = ()
    config.num_steps = 120
    config.ckpt_every = 0  # the benchmark measures training, not checkpoint writes
    config.cv_folds = 5
    config.bench = section(
        "bench",
        strategies=("scratch", "linear_probe", "linear_probe+cache", "full_ft", "freeze_first_k:1", "llrd:0.5",
                    "gradual_unfreeze:20", "lp_ft:0.5", "bitfit", "norm_only", "lora:4", "l2sp:0.01,0.01"),
        seeds=(0, 1),
        budget_field="target_labels_per_class",  # budgets=(5, 10, 20) sweeps it
    )
    return config
