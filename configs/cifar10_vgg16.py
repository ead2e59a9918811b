"""The seed's recipe: ImageNet VGG16 (Keras weights) → CIFAR-10 via TFDS, with its augmentation.

    python -m tljax.run --config configs/cifar10_vgg16.py --workdir runs/cifar10_vgg16

Needs CIFAR-10 prepared for random access (``tfds build cifar10 --file_format=array_record``,
or set ``data.data_dir``); no TensorFlow is needed to read it. Augmentation on device as the
seed's ``ImageDataGenerator``: rotation 15°, width/height shift 0.1, shear 0.1 (degrees, as
Keras), zoom 0.1, horizontal flip; inputs BGR in [0, 255] minus the ImageNet mean, as the Keras
weights expect. Weights from the registry when cached, else from scratch with a warning.
Expected with the ImageNet weights: test accuracy around 0.85–0.9 after ``num_steps`` (GPU).
"""

from tljax.defaults import base_config, section


def get_config():
    config = base_config()
    config.arch, config.pretrained, config.pretrained_optional = "vgg16", "vgg16.keras_in1k", True
    config.data.source = "tfds:cifar10"
    config.augment = section("augment", kind="affine", rotation=15.0, shift=0.1, shear=0.1, zoom=0.1, flip=True,
                             normalize="caffe_bgr")
    config.optimizer, config.lr, config.wd = "sgd", 1e-2, 5e-4
    config.lr_mults = (("head/.*", 10.0),)
    config.batch_size, config.eval_batch_size = 128, 500
    config.num_steps, config.warmup_steps, config.log_every, config.ckpt_every = 20_000, 500, 100, 2000
    return config
