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
    config.arch = "vgg16"
    config.pretrained = "vgg16.keras_in1k"
    config.pretrained_optional = True
    config.data.source = "tfds:cifar10"
    config.augment = section("augment", kind="affine", rotation=15.0, shift=0.1, shear=0.1, zoom=0.1, flip=True,
                             normalize="caffe_bgr")
    config.optimizer = "sgd"
    config.lr = 1e-2
    config.wd = 5e-4
    config.lr_mults = (("head/.*", 10.0),)
    config.warmup_steps = 500
    config.batch_size = 128
    config.eval_batch_size = 500
    config.num_steps = 20_000
    config.log_every = 100
    config.ckpt_every = 2000
    return config
