"""BERT and ViT behaviour that parity alone does not pin down: pooling, masking, dropout, sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import models

SMALL_BERT = {"vocab_size": 30, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 32, "max_position_embeddings": 12, "model_type": "bert"}


def test_bert_features_and_head_pooling():
    ids = jnp.array([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14]])
    mask = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    features = models.create("bert", config=SMALL_BERT)
    v = features.init(jax.random.PRNGKey(0), ids)
    assert features.apply(v, ids, attention_mask=mask).shape == (2, 6, 16)  # last hidden state

    classifier = models.create("bert", num_classes=3, config=SMALL_BERT)
    assert classifier.backbone.pooling == "mean"
    vc = classifier.init(jax.random.PRNGKey(0), ids)
    logits = classifier.apply(vc, ids, attention_mask=mask)
    assert logits.shape == (2, 3)
    # Masked tokens change nothing: neither attention nor the mean sees them.
    other = classifier.apply(vc, ids.at[0, 4:].set(3), attention_mask=mask)
    np.testing.assert_allclose(np.asarray(other), np.asarray(logits), atol=1e-6)


def test_bert_dropout_only_in_training():
    model = models.create("bert", num_classes=2, config=SMALL_BERT)
    ids = jnp.ones((2, 5), jnp.int32)
    v = model.init(jax.random.PRNGKey(0), ids)
    eval_out = model.apply(v, ids, train=False)
    np.testing.assert_array_equal(np.asarray(eval_out), np.asarray(model.apply(v, ids)))
    a = model.apply(v, ids, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    b = model.apply(v, ids, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_drops_the_rate_independently_and_scales_the_rest(rate):
    from tljax.models.dropout import Dropout

    x = jnp.full((999, 1001), 2.0)  # odd size: the last 16-bit half is unused
    layer = Dropout(rate)
    out = np.asarray(layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)}))
    dropped = out == 0
    assert abs(dropped.mean() - rate) < 3e-3  # binomial sd ≈ 5e-4 for 1e6 draws
    np.testing.assert_allclose(out[~dropped], 2.0 / (1 - rate), rtol=1e-6)
    # the two halves of one random word decide neighbouring elements: they must not agree more than chance
    pairs = dropped.reshape(-1)[: dropped.size // 2 * 2].reshape(-1, 2)
    assert abs((pairs[:, 0] & pairs[:, 1]).mean() - rate ** 2) < 3e-3
    again = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
    other = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
    np.testing.assert_array_equal(np.asarray(again), out)
    assert (np.asarray(other) != out).mean() > rate * (1 - rate)  # independent masks differ in 2·rate·(1 − rate)
    assert layer.apply({}, x, deterministic=True) is x
    with pytest.raises(ValueError, match="rate 1.0 must be in"):
        Dropout(1.0).apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})


@pytest.mark.parametrize("key", [jax.random.PRNGKey(0), jax.random.fold_in(jax.random.PRNGKey(7), 3),
                                 jax.random.key(5), jax.random.key(5, impl="rbg")], ids=["raw", "folded", "typed", "rbg"])
def test_dropout_words_are_jax_random_bits(key):
    """The unrolled Threefry gives JAX's own words, so masks are what ``jax.random.bits`` would draw."""
    from tljax.models.dropout import threefry_words

    for n in (1, 7, 4097, 100_001):
        np.testing.assert_array_equal(np.asarray(threefry_words(key, n)), np.asarray(jax.random.bits(key, (n,), jnp.uint32)))
    jitted = jax.jit(threefry_words, static_argnums=1)(key, 513)
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(jax.random.bits(key, (513,), jnp.uint32)))


def test_bert_config_errors():
    with pytest.raises(ValueError, match="absolute"):
        models.create("bert", config={**SMALL_BERT, "position_embedding_type": "relative_key"})
    model = models.create("bert", config=SMALL_BERT)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.init(jax.random.PRNGKey(0), jnp.ones((1, 13), jnp.int32))


def test_vit_rejects_other_image_sizes():
    model = models.create("vit_b16", num_classes=2, num_layers=1)
    with pytest.raises(ValueError, match="image_size"):
        jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
    small = models.create("vit_b16", num_classes=2, num_layers=1, image_size=32)
    shapes = jax.eval_shape(small.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    assert shapes["params"]["backbone"]["pos_embed"].shape == (1, 5, 768)
