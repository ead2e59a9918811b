"""Static word vectors on SST-2: a bag-of-embeddings classifier over MiniLM's word-piece table.

    python -m tljax.run --config configs/wordvec_sst2.py --workdir runs/wordvec            # embedding frozen
    python -m tljax.run --config configs/wordvec_sst2.py --workdir runs/wordvec_ft --config.strategy=full_ft
    python -m tljax.run --config configs/wordvec_sst2.py --workdir runs/bow_scratch --config.strategy=scratch
    ... --config.wordvec.path=glove.6B.100d.txt                                          # GloVe instead

``wordvec.path``: a GloVe/word2vec text file aligned to ``data.tokenizer``'s vocabulary (the
counts found/missing go to ``wordvec.json``), or ``minilm:`` for MiniLM's own input embeddings.
``freeze:backbone/embed/.*`` keeps the table bit-identical; ``scratch`` is the random-table baseline.
"""

import os

from tljax.defaults import base_config, installed_minilm, section

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "sst2")


def get_config():
    config = base_config()
    config.arch, config.model = "bag_of_embeddings", dict(hidden=0, dropout=0.0)
    config.wordvec = section("wordvec", path="minilm:")
    config.data.update(dict(source="text_tsv", train_path=os.path.join(DATA, "train.tsv"),
                            test_path=os.path.join(DATA, "dev.tsv"), tokenizer=installed_minilm(),
                            train_examples=4000))
    config.strategy = "freeze:backbone/embed/.*"
    config.lr, config.wd, config.warmup_steps = 1e-2, 0.0, 10
    config.batch_size, config.num_steps, config.log_every = 64, 300, 25
    return config
