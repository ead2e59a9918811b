"""Freezing-strategy benchmark: all-MiniLM-L6-v2 → SST-2 (4,000 sentences, 2 epochs, max_len 64).

    python scripts/benchmark_freezing.py --config configs/bench_minilm_sst2.py --out runs/bench_minilm_sst2

The recipe of ``configs/minilm_sst2.py`` (AdamW 5e-5, 10 % warm-up then linear decay, batch
32, mean pooling + linear head) for every strategy, one seed. Strategies that train few
parameters get the larger learning rate usual for them (``name|lr=…``): a head or a set of
biases at 5e-5 barely moves in 250 steps. Needs ``../shared/data/sst2``. Expected: full FT ≈ 0.83–0.84 test
accuracy (the PyTorch reference reaches 0.836 at this budget); roughly 5 minutes per
full-backbone cell on 2 CPU cores, seconds for the cached linear probe.
"""

import os

from tljax.config import load_file
from tljax.defaults import section

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config():
    config = load_file(os.path.join(HERE, "minilm_sst2.py"))
    config.ckpt_every = 0
    config.cv_folds = 5
    config.bench = section(
        "bench",
        strategies=("full_ft", "linear_probe+cache|lr=1e-3", "bitfit|lr=1e-3", "norm_only|lr=1e-3", "lora:8|lr=5e-4",
                    "freeze_first_k:3", "llrd:0.8", "lp_ft:0.5", "gradual_unfreeze:0.5", "l2sp:0.01,0.01"),
        budget_field="train_examples",  # budgets=(1000, 4000) sweeps it
    )
    return config
