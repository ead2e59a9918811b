"""The seed's recipe: ImageNet VGG16 (Keras weights) → CIFAR-10 via TFDS, with its augmentation.

    python -m tljax.train --config configs/cifar10_vgg16.py --workdir runs/cifar10_vgg16

Needs CIFAR-10 prepared for random access (``tfds build cifar10 --file_format=array_record``,
or set ``data.data_dir``); no TensorFlow is needed to read it. Augmentation on device as the
seed's ``ImageDataGenerator``: rotation 15°, width/height shift 0.1, shear 0.1 (degrees, as
Keras), zoom 0.1, horizontal flip; inputs BGR in [0, 255] minus the ImageNet mean, as the Keras
weights expect. Weights from the registry when cached, else from scratch with a warning.
Expected with the ImageNet weights: test accuracy around 0.85–0.9 after ``num_steps`` (GPU).
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.arch = "vgg16"
    config.model = ml_collections.ConfigDict()
    config.pretrained = "vgg16.keras_in1k"
    config.pretrained_optional = True
    config.dont_load = ("head/.*",)

    config.data = ml_collections.ConfigDict(dict(source="tfds:cifar10", train_split="train", test_split="test",
                                                 data_dir="", train_examples=0))
    config.augment = ml_collections.ConfigDict(dict(kind="affine", rotation=15.0, shift=0.1, shear=0.1, zoom=0.1,
                                                    flip=True, normalize="caffe_bgr"))

    config.strategy = "full_ft"
    config.compare = ()
    config.optimizer = "sgd"
    config.momentum = 0.9
    config.lr = 1e-2
    config.wd = 5e-4
    config.lr_mults = (("head/.*", 10.0),)
    config.lr_schedule = "cosine"
    config.warmup_steps = 500
    config.batch_size = 128
    config.eval_batch_size = 500
    config.num_steps = 20_000
    config.log_every = 100
    config.ckpt_every = 2000
    # speed, memory and faults (tljax.train.faults)
    config.dtype = "float32"  # "bfloat16": bf16 compute, float32 parameters and optimizer state
    config.grad_accum = 1  # k > 1: k micro-batches of batch_size / k, one update (BatchNorm sees micro-batches)
    config.remat = False  # True: recompute each block's activations in the backward pass (less memory)
    config.mesh = (("data", -1),)  # (("data", 2), ("fsdp", -1)): also split parameters and optimizer state
    config.nan_policy = "stop"  # NaN/inf loss: "stop" (report the batch, keep the last good checkpoint) or "skip"
    config.min_free_mb = 200  # refuse to start with less free disk in the workdir
    config.compilation_cache = "~/.cache/tljax/xla"  # compiled steps kept for the next run; "": off
    return config
