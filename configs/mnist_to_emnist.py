"""Pre-train on MNIST digits, transfer to EMNIST letters (both via TFDS), linear probe vs full FT.

    python -m tljax.train --config configs/mnist_to_emnist.py --workdir runs/mnist_emnist

Needs ``mnist`` and ``emnist/letters`` prepared for random access (``tfds build mnist emnist/letters
--file_format=array_record``, or set ``data.data_dir`` and ``source.data.data_dir``). The source run
(saved in ``<workdir>/source``) trains a small ResNet on MNIST; the target run trains on
``target_train_examples`` EMNIST letters (TFDS labels 1–26 of a 37-way label space) with
``strategy`` and each of ``compare``. Expected: full FT above the linear probe, both well above
chance (1/26); a few minutes on a GPU.
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.arch = "resnet_digits"
    config.model = ml_collections.ConfigDict()
    config.dont_load = ("head/.*",)

    config.target_train_examples = 10_000
    config.data = ml_collections.ConfigDict(dict(source="tfds:emnist/letters", train_split="train",
                                                 test_split="test", data_dir=""))
    config.data.train_examples = config.get_ref("target_train_examples")
    config.augment = ml_collections.ConfigDict(dict(kind="affine", rotation=10.0, shift=0.1, zoom=0.1,
                                                    normalize="none"))

    config.strategy = "full_ft"
    config.compare = ("linear_probe",)
    config.optimizer = "adamw"
    config.lr = 1e-3
    config.wd = 1e-4
    config.momentum = 0.9  # read by the optimizer table (unused by adamw)
    config.lr_mults = (("head/.*", 10.0),)
    config.lr_schedule = "cosine"
    config.warmup_steps = 100
    config.batch_size = 128
    config.eval_batch_size = 500
    config.num_steps = 2000
    config.log_every = 50
    config.ckpt_every = 500
    # speed, memory and faults (tljax.train.faults)
    config.dtype = "float32"  # "bfloat16": bf16 compute, float32 parameters and optimizer state
    config.grad_accum = 1  # k > 1: k micro-batches of batch_size / k, one update (BatchNorm sees micro-batches)
    config.remat = False  # True: recompute each block's activations in the backward pass (less memory)
    config.mesh = (("data", -1),)  # (("data", 2), ("fsdp", -1)): also split parameters and optimizer state
    config.nan_policy = "stop"  # NaN/inf loss: "stop" (report the batch, keep the last good checkpoint) or "skip"
    config.min_free_mb = 200  # refuse to start with less free disk in the workdir
    config.compilation_cache = "~/.cache/tljax/xla"  # compiled steps kept for the next run; "": off

    config.source = ml_collections.ConfigDict(dict(
        data=dict(source="tfds:mnist", train_split="train", test_split="test", data_dir="", train_examples=0),
        num_steps=2000, lr=3e-3, ckpt_every=1000))
    return config
