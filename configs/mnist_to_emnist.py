"""Pre-train on MNIST digits, transfer to EMNIST letters (both via TFDS), linear probe vs full FT.

    python -m tljax.run --config configs/mnist_to_emnist.py --workdir runs/mnist_emnist

Needs ``mnist`` and ``emnist/letters`` prepared for random access (``tfds build mnist emnist/letters
--file_format=array_record``, or set ``data.data_dir`` and ``source.data.data_dir``). The source run
(saved in ``<workdir>/source``) trains a small ResNet on MNIST; the target run trains on
``target_train_examples`` EMNIST letters (TFDS labels 1–26 of a 37-way label space) with
``strategy`` and each of ``compare``. Expected: full FT above the linear probe, both well above
chance (1/26); a few minutes on a GPU.
"""

from tljax.defaults import base_config, section


def get_config():
    config = base_config()
    config.arch = "resnet_digits"
    config.target_train_examples = 10_000
    config.data.source = "tfds:emnist/letters"
    config.data.train_examples = config.get_ref("target_train_examples")
    config.augment = section("augment", kind="affine", rotation=10.0, shift=0.1, zoom=0.1, normalize="none")
    config.compare, config.lr_mults = ("linear_probe",), (("head/.*", 10.0),)
    config.batch_size, config.eval_batch_size, config.warmup_steps = 128, 500, 100
    config.num_steps, config.log_every, config.ckpt_every = 2000, 50, 500
    config.source = dict(data=dict(source="tfds:mnist"), num_steps=2000, lr=3e-3, ckpt_every=1000)
    return config
