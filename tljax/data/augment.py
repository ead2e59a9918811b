"""Image augmentation and normalisation on device, inside the jit-compiled train step.

Host workers only decode and resize; the random geometry runs here, vectorised over the
batch and seeded from the step's rng, so it costs the accelerator microseconds and a resumed
run draws exactly the same transforms. Every transform with zero strength is the identity.

``make_preprocess(cfg)`` turns ``config.augment`` into ``(train_fn(batch, rng), eval_fn(batch))``
for ``train_step``/``eval_step``; both are ``None`` when there is nothing to do.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import dm_pix as pix
import jax
import jax.numpy as jnp

from tljax.defaults import section

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)  # Keras VGG16 weights: BGR in [0, 255] minus this
NORMALIZE = ("none", "imagenet", "caffe_bgr")
KINDS = ("none", "affine", "rrc")


def to_unit_float(images) -> jax.Array:
    """uint8 pixels -> float32 in [0, 1]; float images pass through unchanged."""
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 255.0
    return images.astype(jnp.float32)


def normalize(images, kind: str) -> jax.Array:
    """From [0, 1] RGB to what the pretrained weights were trained on."""
    if kind == "none":
        return images
    if kind == "imagenet":
        return (images - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    if kind == "caffe_bgr":
        return images[..., ::-1] * 255.0 - jnp.asarray(CAFFE_BGR_MEAN)
    raise ValueError(f"unknown normalize {kind!r}; allowed: {NORMALIZE}")


def flip_left_right(images, flips) -> jax.Array:
    """Mirrors the images of a ``(B, H, W, C)`` batch where ``flips`` is True."""
    return jnp.where(flips[:, None, None, None], images[:, :, ::-1], images)


def affine_matrix(height: int, width: int, angle, shear, zoom_y, zoom_x, shift_y, shift_x) -> jax.Array:
    """The 'pull' matrix (output pixel -> input pixel) about the image centre, angles in radians.

    Rotation, shear and zoom compose as Keras' ``ImageDataGenerator.apply_transform`` does;
    shifts are in pixels.
    """
    c, s = jnp.cos(angle), jnp.sin(angle)
    rotate = jnp.array([[c, -s], [s, c]])
    shear_m = jnp.array([[1.0, -jnp.sin(shear)], [0.0, jnp.cos(shear)]])
    zoom = jnp.diag(jnp.stack([zoom_y, zoom_x]))
    a = rotate @ shear_m @ zoom
    centre = jnp.array([(height - 1) / 2.0, (width - 1) / 2.0])
    offset = centre - a @ centre + jnp.stack([shift_y, shift_x])
    m = jnp.eye(4).at[:2, :2].set(a).at[:2, 3].set(offset)  # (y, x, channel, 1) homogeneous
    return m


def random_affine(images, rng, rotation: float = 0.0, shift: float = 0.0, shear: float = 0.0,
                  zoom: float = 0.0, flip: bool = False) -> jax.Array:
    """Keras-style random rotation (degrees), width/height shift (fraction), shear (degrees),
    zoom (fraction) and horizontal flip, with 'nearest' fill; ``(B, H, W, C)`` floats."""
    b, h, w, _ = images.shape
    keys = jax.random.split(rng, 7)
    u = lambda k, r: jax.random.uniform(k, (b,), minval=-r, maxval=r)  # noqa: E731
    angle, shear_a = u(keys[0], math.radians(rotation)), u(keys[1], math.radians(shear))
    zy, zx = 1.0 + u(keys[2], zoom), 1.0 + u(keys[3], zoom)
    ty, tx = u(keys[4], shift) * h, u(keys[5], shift) * w
    matrices = jax.vmap(lambda *a: affine_matrix(h, w, *a))(angle, shear_a, zy, zx, ty, tx)
    out = jax.vmap(lambda im, m: pix.affine_transform(im, m, order=1, mode="nearest"))(images, matrices)
    if flip:
        out = flip_left_right(out, jax.random.bernoulli(keys[6], 0.5, (b,)))
    return out


def crop_boxes(rng, batch: int, scale: Sequence[float], ratio: Sequence[float]) -> Tuple[jax.Array, ...]:
    """Random boxes ``(y0, x0, h, w)`` as fractions of the image (area in ``scale``, w/h in ``ratio``)."""
    k_area, k_ratio, k_y, k_x = jax.random.split(rng, 4)
    area = jax.random.uniform(k_area, (batch,), minval=scale[0], maxval=scale[1])
    log_r = jax.random.uniform(k_ratio, (batch,), minval=math.log(ratio[0]), maxval=math.log(ratio[1]))
    r = jnp.exp(log_r)
    h = jnp.clip(jnp.sqrt(area / r), 0.0, 1.0)
    w = jnp.clip(jnp.sqrt(area * r), 0.0, 1.0)
    y0 = jax.random.uniform(k_y, (batch,)) * (1.0 - h)
    x0 = jax.random.uniform(k_x, (batch,)) * (1.0 - w)
    return y0, x0, h, w


def random_resized_crop(images, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip: bool = True) -> jax.Array:
    """Inception-style crop of a random box resized back to the input size, then a random flip."""
    b, h, w, c = images.shape
    k_box, k_flip = jax.random.split(rng)
    y0, x0, bh, bw = crop_boxes(k_box, b, scale, ratio)

    def one(image, y0, x0, bh, bw):
        return jax.image.scale_and_translate(image, (h, w, c), (0, 1), jnp.stack([1 / bh, 1 / bw]),
                                             jnp.stack([-y0 * h / bh, -x0 * w / bw]), method="linear")

    out = jax.vmap(one)(images, y0, x0, bh, bw)
    if flip:
        out = flip_left_right(out, jax.random.bernoulli(k_flip, 0.5, (b,)))
    return out


def make_preprocess(cfg) -> Tuple[Optional[Callable], Optional[Callable]]:
    """``(train_fn(batch, rng), eval_fn(batch))`` from ``config.augment``; ``(None, None)`` when absent."""
    if not cfg:
        return None, None
    cfg = section("augment", **(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg))  # undeclared fields: defaults
    kind, norm = cfg.kind, cfg.normalize
    if kind not in KINDS:
        raise ValueError(f"config.augment.kind={kind!r}; allowed: {KINDS}")
    if norm not in NORMALIZE:
        raise ValueError(f"config.augment.normalize={norm!r}; allowed: {NORMALIZE}")

    def eval_fn(batch):
        if "image" not in batch:
            return batch
        return {**batch, "image": normalize(to_unit_float(batch["image"]), norm)}

    def train_fn(batch, rng):
        if "image" not in batch:
            return batch
        images = to_unit_float(batch["image"])
        if kind == "affine":
            images = random_affine(images, rng, cfg.rotation, cfg.shift, cfg.shear, cfg.zoom, cfg.flip)
        elif kind == "rrc":
            images = random_resized_crop(images, rng, tuple(cfg.scale), tuple(cfg.ratio), cfg.flip)
        return {**batch, "image": normalize(images, norm)}

    return train_fn, eval_fn
