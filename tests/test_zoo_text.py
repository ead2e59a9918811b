"""Text encoders beyond BERT: RoBERTa, XLM-R and DistilBERT with their tokenizers.

Random small transformers models (parity extra), saved with ``save_pretrained`` and loaded
through ``tljax.pretrained.load(folder)``: last hidden state (and pooler / classifier logits)
equal to transformers' to 1e-4 on padded batches; tokenizers built offline equal to
``AutoTokenizer``'s ids; every depth strategy builds; one fine-tuning run through ``python -m
tljax.train`` on a tiny RoBERTa folder.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from tljax import models, pretrained, strategies  # noqa: E402
from tljax import params as P  # noqa: E402
from tljax.data import text  # noqa: E402
from tljax.strategies.layout import depth_groups  # noqa: E402

from conftest import run_train  # noqa: E402
from test_convert_parity import compare, randomize_  # noqa: E402

torch.set_num_threads(2)
SIZES = dict(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
             max_position_embeddings=40, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, num_labels=3)
CORPUS = ["The quick brown fox jumps over the lazy dog.", "A tiny corpus for a tiny tokenizer, trained offline!",
          "Transfer learning with JAX and Flax.", "this movie was great", "that one was awful"] * 4
SENTENCES = ["the quick fox", "Transfer learning with Flax and JAX: a long sentence that will be cut short",
             "h\u00e9llo w\u00f6rld 123", ""]


def config_of(kind: str):
    if kind == "roberta":
        return transformers.RobertaConfig(**SIZES)
    if kind == "xlm-roberta":
        return transformers.XLMRobertaConfig(**SIZES)
    return transformers.DistilBertConfig(vocab_size=120, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                                         max_position_embeddings=40, sinusoidal_pos_embds=kind.endswith("sin"),
                                         activation="gelu", num_labels=3)


def padded_batch(pad_id: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 120, (3, 12))
    mask = np.ones((3, 12), np.int64)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = pad_id  # padded as the tokenizer pads: RoBERTa's positions depend on it
    return ids, mask


def save(ref_model, folder):
    ref_model.save_pretrained(folder)
    return str(folder)


def ours(model, variables, ids, mask):
    return model.apply(variables, jnp.asarray(ids), attention_mask=jnp.asarray(mask), train=False)


@pytest.mark.parametrize("kind,cls", [("roberta", "RobertaModel"), ("xlm-roberta", "XLMRobertaModel"),
                                      ("distilbert", "DistilBertModel"), ("distilbert-sin", "DistilBertModel")])
def test_base_model_parity(kind, cls, tmp_path):
    config = config_of(kind)
    torch.manual_seed(0)
    ref_model = randomize_(getattr(transformers, cls)(config))
    ids, mask = padded_batch(config.pad_token_id)
    with torch.no_grad():
        ref = ref_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    folder = save(ref_model, tmp_path / kind)
    model, variables = pretrained.load(folder)
    diffs = [compare(ref.last_hidden_state.numpy(), ours(model, variables, ids, mask), f"hf {cls} last hidden state")]
    if kind.endswith("roberta"):  # the pooler is kept when asked for
        model, variables = pretrained.load(folder, pooling="pooler")
        diffs.append(compare(ref.pooler_output.numpy(), ours(model, variables, ids, mask), f"hf {cls} pooler output"))
    else:
        assert "pooler" not in variables["params"]["backbone"]
    if kind == "distilbert-sin":  # a fresh model starts from the same table
        from tljax.models.distilbert import sinusoidal_init  # noqa: PLC0415

        table = ref_model.embeddings.position_embeddings.weight.detach().numpy()
        np.testing.assert_allclose(sinusoidal_init(None, table.shape), table, atol=1e-6)
    if kind == "roberta":  # a fresh k-way head reads the masked mean (HEAD_DEFAULTS) of the same states
        model, variables = pretrained.load(folder, num_classes=5)
        assert model.backbone.pooling == "mean" and ours(model, variables, ids, mask).shape == (3, 5)
    assert max(diffs) <= 1e-4


@pytest.mark.parametrize("cls", ["RobertaForSequenceClassification", "XLMRobertaForSequenceClassification",
                                 "DistilBertForSequenceClassification"])
def test_sequence_classification_parity(cls, tmp_path):
    config = config_of("distilbert" if cls.startswith("Distil") else "roberta")
    torch.manual_seed(1)
    ref_model = randomize_(getattr(transformers, cls)(config))
    with torch.no_grad():  # the 0.02-std initial head gives logits of order 0.01
        g = torch.Generator().manual_seed(1)
        for name, p in ref_model.named_parameters():
            if name.startswith(("classifier", "pre_classifier")) and p.ndim == 2:
                p.normal_(0.0, 0.3, generator=g)
    ids, mask = padded_batch(config.pad_token_id, 1)
    with torch.no_grad():
        ref = ref_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    model, variables = pretrained.load(save(ref_model, tmp_path / cls), keep_head=True)
    assert model.num_classes == 3 and model.backbone.pooling == "pooler"
    assert compare(ref, ours(model, variables, ids, mask), f"hf {cls} logits") <= 1e-4


# --- tokenizers -------------------------------------------------------------------------------

def bpe_tokenizer(folder):
    """A byte-level BPE (RoBERTa's kind) trained on CORPUS, saved by transformers' RobertaTokenizer."""
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(CORPUS, tokenizers.trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    transformers.RobertaTokenizer(vocab=model["vocab"], merges=merges).save_pretrained(folder)
    return str(folder)


def unigram_tokenizer(folder):
    """A SentencePiece Unigram (XLM-R's kind) trained on CORPUS, saved by transformers' XLMRobertaTokenizer."""
    tok = tokenizers.Tokenizer(tokenizers.models.Unigram())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
    tok.train_from_iterator(CORPUS, tokenizers.trainers.UnigramTrainer(
        vocab_size=100, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False))
    vocab = [tuple(v) for v in json.loads(tok.to_str())["model"]["vocab"]] + [("<mask>", 0.0)]
    transformers.XLMRobertaTokenizer(vocab=vocab).save_pretrained(folder)
    return str(folder)


def wordpiece_tokenizer(folder):
    """A WordPiece vocabulary (BERT's / DistilBERT's kind) written by hand."""
    words = sorted({w.strip(".,!:").lower() for s in CORPUS for w in s.split()} - {""})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz0123456789.,!:",
             *words, "##s", "##ed"]
    transformers.DistilBertTokenizer(vocab={t: i for i, t in enumerate(dict.fromkeys(vocab))}).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("build,pad", [(bpe_tokenizer, "<pad>"), (unigram_tokenizer, "<pad>"),
                                       (wordpiece_tokenizer, "[PAD]")])
def test_token_ids_equal_auto_tokenizer(build, pad, tmp_path):
    folder = build(tmp_path / build.__name__)
    reference = transformers.AutoTokenizer.from_pretrained(folder)
    for max_len in (8, 32):  # truncated and padded
        tok = text.load_tokenizer(folder, max_len)
        got = text.tokenize(tok, SENTENCES, max_len)
        want = reference(SENTENCES, truncation=True, max_length=max_len, padding="max_length", return_tensors="np")
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{build.__name__} {key} max_len={max_len}")
        assert (got["attention_mask"] == 0).any()  # padded
    assert got["input_ids"][3, 2] == reference.pad_token_id == tok.token_to_id(pad)
    cut = text.tokenize(text.load_tokenizer(folder, 8), SENTENCES[1:2], 8)
    assert cut["attention_mask"].all()  # the long sentence is cut to 8 tokens, specials included:
    assert cut["input_ids"][0, 0] == reference.cls_token_id and cut["input_ids"][0, -1] == reference.sep_token_id
    # A saved copy of the tokenizer (what an export keeps) pads the same without the folder's config.
    tok.save(str(tmp_path / "copy.json"))
    again = text.tokenize(text.load_tokenizer(str(tmp_path / "copy.json"), 32), SENTENCES, 32)
    np.testing.assert_array_equal(again["input_ids"], got["input_ids"])


# --- strategies and a training run -------------------------------------------------------------

@pytest.mark.parametrize("arch,config", [
    ("roberta", {"model_type": "xlm-roberta", **SIZES}),
    ("distilbert", {"model_type": "distilbert", "vocab_size": 120, "dim": 32, "n_layers": 3, "n_heads": 2,
                    "hidden_dim": 64, "max_position_embeddings": 40}),
])
def test_depth_groups_and_strategies(arch, config):
    model = models.create(arch, num_classes=2, config=config)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), models.example_input(model))["params"]
    paths = list(P.flatten(params))
    layers = config.get("num_hidden_layers", config.get("n_layers"))
    assert [g for g, _ in depth_groups(paths)] == ["stem", *(f"block{i}" for i in range(layers))]
    labels = P.flatten(strategies.labels_for(strategies.get("freeze_first_k:1"), params))
    frozen = {p for p, label in labels.items() if label == strategies.FROZEN}
    assert "backbone/word_embeddings/embedding" in frozen and "backbone/layer0/output/kernel" in frozen
    assert "backbone/layer1/output/kernel" not in frozen and "head/kernel" not in frozen
    mults = strategies.get("llrd:0.5").resolve("lr_mults", paths)
    assert [m for _, m in mults] == [1.0, 0.5 ** (layers + 1), *(0.5 ** (layers - i) for i in range(layers))]
    starts = strategies.get("gradual_unfreeze:1").resolve("start_epochs", paths)
    assert [s for _, s in starts] == [0.0, layers + 1.0, *(float(layers - i) for i in range(layers))]
    from tljax import lora  # noqa: PLC0415

    targets = lora.target_paths(params, strategies.get("lora:4,8,targets=attention").lora["targets"])
    assert len(targets) == 4 * layers
    assert len(lora.target_paths(params, None)) == 2 * layers  # default: query and value


@pytest.mark.parametrize("arch", ["roberta", "distilbert"])
def test_text_family_fine_tunes_through_the_cli(tmp_path, arch):
    """``python -m tljax.train`` on a random tiny RoBERTa / DistilBERT folder with its own BPE tokenizer."""
    folder = bpe_tokenizer(tmp_path / arch)
    torch.manual_seed(0)
    if arch == "roberta":
        transformers.RobertaModel(transformers.RobertaConfig(**{**SIZES, "vocab_size": 300})).save_pretrained(folder)
    else:
        transformers.DistilBertModel(transformers.DistilBertConfig(
            vocab_size=300, dim=64, n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=40)
        ).save_pretrained(folder)
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "".join(f"this movie was {w}\t{i % 2}\n" for i, w in
                                                   enumerate(["great", "awful", "lovely", "boring"] * 4)))
    run_train(tmp_path / "run", f"--config.pretrained={folder}", f"--config.arch={arch}",
              f"--config.data.train_path={train}", f"--config.data.test_path={train}",
              f"--config.data.eval_path={train}", "--config.train_examples=8", "--config.epochs=1",
              "--config.max_len=16", "--config.batch_size=4", "--config.eval_batch_size=8",
              "--config.strategy=llrd:0.8", config="configs/minilm_sst2.py")
    with open(tmp_path / "run" / "summary.json") as f:
        summary = json.load(f)
    assert summary["num_steps"] == 2 and summary["test_examples"] == 16
    assert 0.0 <= summary["accuracy"] <= 1.0 and summary["trainable_params"] == summary["total_params"]


def test_clear_errors():
    with pytest.raises(ValueError, match=r"model_type 'bert', not one of \['roberta'"):
        models.create("roberta", config={"model_type": "bert"})
    with pytest.raises(ValueError, match="not 'distilbert'"):
        models.create("distilbert", config={"model_type": "roberta"})
    model = models.create("roberta", config=SIZES)  # 40 positions, the first two kept for padding
    with pytest.raises(ValueError, match=r"38 positions .*data.max_len <= 38"):
        jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.ones((1, 39), jnp.int32))
