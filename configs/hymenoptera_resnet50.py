"""ImageNet ResNet-50 → ants vs bees (the hymenoptera image folder), full fine-tuning.

    python -m tljax.run --config configs/hymenoptera_resnet50.py --workdir runs/hymenoptera
    python -m tljax.run --config configs/hymenoptera_resnet50.py --workdir /tmp/hym_smoke \\
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

from tljax.defaults import base_config, section

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "hymenoptera")


def get_config():
    config = base_config()
    config.arch = "resnet50"
    config.pretrained = "resnet50.tv_in1k"  # registry name or path; '' = random init
    config.pretrained_optional = True  # not in the cache: train from scratch with a warning
    config.image_size = 224
    config.data.update(dict(source="image_folder", path=DATA, test_split="val", num_threads=8))
    config.data.image_size = config.get_ref("image_size")
    config.augment = section("augment", kind="rrc", scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip=True,
                             normalize="imagenet")
    config.optimizer, config.lr_mults, config.warmup_steps = "sgd", (("head/.*", 10.0),), 5
    config.batch_size, config.eval_batch_size = 16, 32
    config.num_steps, config.log_every, config.ckpt_every = 100, 5, 50
    return config
