"""Benchmark of the methods beyond fine-tuning, each against its plain baseline at the same budget.

    python scripts/benchmark_freezing.py --config configs/bench_methods.py --out runs/bench_methods

Cells name their own config (``strategy@config|overrides``): distillation vs the same student
without a teacher (α = 1), multi-task (digit + parity) vs digit alone (parity ratio 0), DANN vs
source-only on inverted and on noisy digits, and MiniLM's word-piece vectors in a bag-of-embeddings SST-2
classifier (frozen / tuned) vs a random table. ``bench.baselines`` gives the gain table. The
word-vector cells need ``../shared/data/sst2`` (drop them from ``strategies`` where it is absent).
"""

from tljax.defaults import base_config, section

D, M, A, W = ("configs/distill_digits.py", "configs/multitask_digits.py", "configs/dann_digits.py",
              "configs/wordvec_sst2.py")
SST2 = "|data.train_examples=2000|num_steps=200"

CELLS = {
    "distill": f"scratch@{D}",
    "distill_plain": f"scratch@{D}|distill.alpha=1.0",
    "multitask": f"scratch@{M}",
    "multitask_single": f"scratch@{M}|tasks.parity.ratio=0.0",
    "dann": f"scratch@{A}",
    "dann_source_only": f"scratch@{A}|adapt.method=source_only",
    "dann_noise": f"scratch@{A}|adapt.shift=noise",
    "dann_noise_source_only": f"scratch@{A}|adapt.shift=noise|adapt.method=source_only",
    "wordvec_frozen": f"freeze:backbone/embed/.*@{W}{SST2}",
    "wordvec_tuned": f"full_ft@{W}{SST2}",
    "wordvec_scratch": f"scratch@{W}{SST2}",
}


def get_config():
    config = base_config()
    config.bench = section(
        "bench",
        strategies=tuple(CELLS.values()),
        seeds=(0, 1, 2),
        baselines=(("distillation (α=0.3, T=4)", CELLS["distill"], CELLS["distill_plain"]),
                   ("multi-task: digit accuracy", CELLS["multitask"], CELLS["multitask_single"]),
                   ("DANN: inverted digits", CELLS["dann"], CELLS["dann_source_only"]),
                   ("DANN: noisy digits", CELLS["dann_noise"], CELLS["dann_noise_source_only"]),
                   ("word vectors, frozen", CELLS["wordvec_frozen"], CELLS["wordvec_scratch"]),
                   ("word vectors, tuned", CELLS["wordvec_tuned"], CELLS["wordvec_scratch"])),
    )
    return config
