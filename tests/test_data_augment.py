"""On-device augmentation: identities at zero strength, determinism per rng, jit-able."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tljax.data import augment as A

IMAGES = jax.random.uniform(jax.random.PRNGKey(0), (4, 20, 24, 3))
KEY = jax.random.PRNGKey(1)


def test_zero_strength_transforms_are_the_identity():
    np.testing.assert_array_equal(jax.jit(A.random_affine)(IMAGES, KEY), IMAGES)
    rrc = jax.jit(lambda x, k: A.random_resized_crop(x, k, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False))
    np.testing.assert_allclose(rrc(IMAGES, KEY), IMAGES, atol=1e-6)


def test_flip_twice_is_the_identity_and_flip_mirrors():
    flips = jnp.array([True, False, True, False])
    once = A.flip_left_right(IMAGES, flips)
    np.testing.assert_array_equal(once[0], IMAGES[0, :, ::-1])
    np.testing.assert_array_equal(once[1], IMAGES[1])
    np.testing.assert_array_equal(A.flip_left_right(once, flips), IMAGES)


def test_rotation_by_90_degrees_moves_pixels_where_expected():
    square = jnp.arange(25.0).reshape(5, 5, 1)
    m = A.affine_matrix(5, 5, jnp.pi / 2, 0.0, 1.0, 1.0, 0.0, 0.0)
    np.testing.assert_allclose(A.pix.affine_transform(square, m)[..., 0], np.rot90(square[..., 0], -1), atol=1e-4)


def test_same_rng_same_output_other_rng_other_output():
    for fn in (lambda x, k: A.random_affine(x, k, 15, 0.1, 0.1, 0.1, True), A.random_resized_crop):
        a, b, c = fn(IMAGES, KEY), fn(IMAGES, KEY), fn(IMAGES, jax.random.PRNGKey(2))
        np.testing.assert_array_equal(a, b)
        assert a.shape == IMAGES.shape and not np.allclose(a, c)


def test_preprocess_casts_normalises_and_leaves_text_alone():
    cfg = ml_collections.ConfigDict(dict(kind="rrc", normalize="imagenet"))
    train_fn, eval_fn = A.make_preprocess(cfg)
    batch = {"image": np.full((2, 8, 8, 3), 255, np.uint8), "label": np.zeros(2, np.int32)}
    out = eval_fn(batch)["image"]
    np.testing.assert_allclose(out[0, 0, 0], (1 - np.array(A.IMAGENET_MEAN)) / np.array(A.IMAGENET_STD), rtol=1e-5)
    assert jax.jit(train_fn)(batch, KEY)["image"].dtype == jnp.float32
    text = {"input_ids": np.ones((2, 4), np.int32)}
    assert train_fn(text, KEY) is text and A.make_preprocess(None) == (None, None)
    bgr = A.make_preprocess(ml_collections.ConfigDict(dict(kind="none", normalize="caffe_bgr")))[1]
    rgb = np.zeros((1, 1, 1, 3), np.float32)
    rgb[..., 0] = 1.0  # pure red -> BGR channel 2 is 255 minus its mean
    np.testing.assert_allclose(bgr({"image": rgb})["image"][0, 0, 0], np.array([0, 0, 255.0]) - A.CAFFE_BGR_MEAN)
