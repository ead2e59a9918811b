"""ImageNet ResNet-50 → ants vs bees (the hymenoptera image folder), full fine-tuning.

    python -m tljax.train --config configs/hymenoptera_resnet50.py --workdir runs/hymenoptera
    python -m tljax.train --config configs/hymenoptera_resnet50.py --workdir /tmp/hym_smoke \\
        --config.arch=resnet18 --config.pretrained=resnet18.tv_in1k --config.image_size=64 --config.num_steps=4

Reads ``../shared/data/hymenoptera/{train,val}/{ants,bees}`` relative to the repository root
(245 training and 153 validation images; one is a palette GIF, converted to RGB). Images are
decoded and resized (shorter side, centre crop) to ``image_size`` on the host; random-resized-crop,
flip and ImageNet normalisation run on device in the train step. Pretrained weights come from
the registry when they are in the cache (``$TLJAX_CACHE``); otherwise a warning is printed and
the net trains from scratch. Expected with the ImageNet weights: validation accuracy above 0.9
after ``num_steps``=100 (a few minutes on a GPU; tens of minutes on 2 CPU cores).
"""

import os

import ml_collections

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "hymenoptera")


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.arch = "resnet50"
    config.model = ml_collections.ConfigDict()
    config.pretrained = "resnet50.tv_in1k"  # registry name or path; '' = random init
    config.pretrained_optional = True  # not in the cache: train from scratch with a warning
    config.dont_load = ("head/.*",)

    config.image_size = 224
    config.data = ml_collections.ConfigDict(dict(source="image_folder", path=DATA, train_split="train",
                                                 test_split="val", num_threads=8, prefetch=4))
    config.data.image_size = config.get_ref("image_size")
    config.augment = ml_collections.ConfigDict(dict(kind="rrc", scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip=True,
                                                    normalize="imagenet"))

    config.strategy = "full_ft"
    config.compare = ()
    config.optimizer = "sgd"
    config.momentum = 0.9
    config.lr = 1e-3
    config.wd = 1e-4
    config.lr_mults = (("head/.*", 10.0),)
    config.lr_schedule = "cosine"
    config.warmup_steps = 5
    config.batch_size = 16
    config.eval_batch_size = 32
    config.num_steps = 100
    config.log_every = 5
    config.ckpt_every = 50
    # speed, memory and faults (tljax.train.faults)
    config.dtype = "float32"  # "bfloat16": bf16 compute, float32 parameters and optimizer state
    config.grad_accum = 1  # k > 1: k micro-batches of batch_size / k, one update (BatchNorm sees micro-batches)
    config.remat = False  # True: recompute each block's activations in the backward pass (less memory)
    config.mesh = (("data", -1),)  # (("data", 2), ("fsdp", -1)): also split parameters and optimizer state
    config.nan_policy = "stop"  # NaN/inf loss: "stop" (report the batch, keep the last good checkpoint) or "skip"
    config.min_free_mb = 200  # refuse to start with less free disk in the workdir
    config.compilation_cache = "~/.cache/tljax/xla"  # compiled steps kept for the next run; "": off
    return config
