"""Digits 0–4 → digits 5–9 with 10 labels per class: the offline transfer demo.

    python -m tljax.train --config configs/digits_transfer.py --workdir runs/digits

Pre-trains a small ResNet on sklearn digits 0–4 (saved in ``runs/digits/source``, reused
when present), then trains on digits 5–9 with ``target_labels_per_class`` labels per class
using ``strategy`` and, for comparison, each of ``compare``. Measured on 2 CPU cores: 2 min 41 s
to 3 min with the install; test accuracy (846 held-out digits) full FT 0.941, scratch 0.935,
linear probe 0.863 (one run; see the README for how much such a run moves).
"""

import ml_collections


def get_config(arg=None):
    """``arg='runlocal'``: a seconds-long smoke run (tiny model, few steps) for tests."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.arch = "resnet_digits"
    config.model = ml_collections.ConfigDict()  # overrides passed to models.create

    config.target_labels_per_class = 10
    config.data = ml_collections.ConfigDict(dict(source="digits", classes=(5, 6, 7, 8, 9)))
    config.data.labels_per_class = config.get_ref("target_labels_per_class")

    config.strategy = "full_ft"
    config.compare = ("linear_probe", "scratch")
    config.dont_load = ("head/.*",)
    config.frozen_bn_train = False  # True: BatchNorms in frozen blocks keep updating their statistics

    config.lr_mults = (("head/.*", 10.0),)  # the new head learns 10× faster (big_vision style table)
    config.optimizer = "adamw"
    config.lr = 1e-3
    config.wd = 1e-4
    config.momentum = 0.9
    config.lr_schedule = "cosine"
    config.warmup_steps = 10
    config.batch_size = 32
    config.eval_batch_size = 256
    config.num_steps = 200
    config.log_every = 20
    config.ckpt_every = 100
    config.stop_at_step = 0  # > 0: save and stop there, as if pre-empted (resume by rerunning)
    # speed, memory and faults (tljax.train.faults)
    config.dtype = "float32"  # "bfloat16": bf16 compute, float32 parameters and optimizer state
    config.grad_accum = 1  # k > 1: k micro-batches of batch_size / k, one update (BatchNorm sees micro-batches)
    config.remat = False  # True: recompute each block's activations in the backward pass (less memory)
    # devices: (("data", -1),) copies the model on each; (("data", 2), ("fsdp", -1)) also splits parameters
    # and optimizer state over "fsdp" (FSDP) for models too big to copy. The batch is split over both.
    config.mesh = (("data", -1),)
    config.nan_policy = "stop"  # NaN/inf loss: "stop" (report the batch, keep the last good checkpoint) or "skip"
    config.min_free_mb = 200  # refuse to start with less free disk in the workdir
    # "auto": jemalloc where installed (the run restarts under it), else glibc keeping freed memory for the
    # next step ("keep": no page faults); or "jemalloc", "default" (tljax/train/host_memory.py)
    config.host_malloc = "auto"
    # compiled steps kept on disk for the next run (JAX's persistent cache); "" compiles every time
    config.compilation_cache = "~/.cache/tljax/xla"

    # Pre-training on the source task: these fields replace the ones above for that run.
    config.source = ml_collections.ConfigDict(dict(
        data=dict(source="digits", classes=(0, 1, 2, 3, 4), test_fraction=0.2),
        num_steps=400, lr=3e-3, batch_size=64, ckpt_every=200))
    if arg == "runlocal":
        config.model = ml_collections.ConfigDict(dict(widths=(8, 16, 32)))
        config.num_steps, config.ckpt_every, config.log_every = 12, 4, 4
        config.source.num_steps, config.source.ckpt_every = 20, 10
        config.compare = ()
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use 'runlocal' or nothing")
    return config
