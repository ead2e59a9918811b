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
