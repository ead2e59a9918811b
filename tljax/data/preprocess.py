"""What images must look like before a model sees them: ``Preprocess``, which travels with weights.

A ``Preprocess`` says how the weights were trained to read an image: resize the shorter side to
``input_size / crop_fraction`` (``interpolation``), cut the centre ``input_size`` square, scale
to [0, 1], reorder the channels to ``channel_order`` and normalise with ``mean``/``std`` (one
value per channel, in that order). Registry entries carry one, Hugging Face / timm folders give
one (``from_hf_processor``, ``from_timm_cfg``), a fine-tuned model saves the one its training
used, and ``Finetuned.predict`` applies it, so a model is never fed pixels it was not trained on.

This module imports numpy only (PIL when an image file is read): ``normalize`` works on numpy
and on jax arrays alike, so the same formula runs on the host, in jit and in an exported graph.
Training normalises with ``config.augment.normalize`` (``none``, ``imagenet``, ``caffe_bgr``);
``from_normalize`` maps a kind to its ``Preprocess`` and ``normalize_kind`` back, and
``mismatches`` names where a config contradicts the weights (``warn_once`` reports each once).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)  # Keras VGG16: BGR in [0, 255] minus this
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")  # PIL's filters
HF_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}  # PIL enum
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class PreprocessMismatch(UserWarning):
    """A config normalises or sizes images differently from what the pretrained weights expect."""


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Resize, crop and normalisation an image model expects; ``len(mean)`` is its channel count."""

    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    input_size: Union[int, Tuple[int, int]] = 224  # square side, or (height, width)
    crop_fraction: float = 0.875  # the centre crop's share of the resized shorter side
    interpolation: str = "bilinear"
    channel_order: str = "RGB"  # the order ``mean``/``std`` and the model read channels in

    def __post_init__(self):
        size = self.input_size
        size = int(size) if np.ndim(size) == 0 else tuple(int(s) for s in size)
        for name, value in (("mean", tuple(float(m) for m in self.mean)), ("std", tuple(float(s) for s in self.std)),
                            ("input_size", size), ("crop_fraction", float(self.crop_fraction))):
            object.__setattr__(self, name, value)
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"Preprocess: mean {self.mean} and std {self.std} need one value per channel")
        if min(self.std) <= 0:
            raise ValueError(f"Preprocess: std {self.std} must be > 0")
        if min(self.size_hw) < 1 or not 0 < self.crop_fraction <= 1:
            raise ValueError(f"Preprocess: input_size {self.input_size} must be >= 1 and crop_fraction "
                             f"{self.crop_fraction} in (0, 1]")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"Preprocess: interpolation {self.interpolation!r}; allowed: {INTERPOLATIONS}")
        if self.channel_order not in ("RGB", "BGR") or (self.channel_order == "BGR" and self.channels != 3):
            raise ValueError(f"Preprocess: channel_order {self.channel_order!r}; allowed: RGB, or BGR for 3 channels")

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def size_hw(self) -> Tuple[int, int]:
        return (self.input_size, self.input_size) if isinstance(self.input_size, int) else self.input_size

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready fields (``from_dict`` reads them back)."""
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> "Preprocess":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"Preprocess has no field {unknown[0]!r}; fields: {sorted(known)}")
        return cls(**fields)


def from_normalize(kind: str, channels: int = 3, input_size=224) -> Preprocess:
    """The ``Preprocess`` of training with ``config.augment.normalize=kind`` on ``input_size`` images
    (the image sources resize the shorter side and crop the centre square: crop fraction 1)."""
    if kind == "none":
        return Preprocess((0.0,) * channels, (1.0,) * channels, input_size, 1.0)
    if kind == "imagenet":
        return Preprocess(IMAGENET_MEAN, IMAGENET_STD, input_size, 1.0)
    if kind == "caffe_bgr":  # x·255 − m  ==  (x − m/255) / (1/255), channels reversed first
        return Preprocess(tuple(m / 255 for m in CAFFE_BGR_MEAN), (1 / 255,) * 3, input_size, 1.0, channel_order="BGR")
    raise ValueError(f"unknown normalize {kind!r}; allowed: none, imagenet, caffe_bgr")


def normalize_kind(p: Preprocess) -> Optional[str]:
    """The ``config.augment.normalize`` that computes ``p``'s normalisation, or None when none does."""
    for kind in ("none", "imagenet", "caffe_bgr"):
        q = from_normalize(kind, p.channels) if kind == "none" or p.channels == 3 else None
        if q and q.channel_order == p.channel_order and np.allclose(q.mean + q.std, p.mean + p.std, rtol=1e-4,
                                                                      atol=1e-6):
            return kind
    return None


def normalize(images, p: Preprocess):
    """``[0, 1]`` images ``(..., H, W, C)`` (numpy or jax) → what the model reads: channels
    reordered to ``p.channel_order``, minus ``mean``, over ``std``."""
    if p.channel_order == "BGR":
        images = images[..., ::-1]
    return (images - np.asarray(p.mean, np.float32)) / np.asarray(p.std, np.float32)


def from_timm_cfg(pretrained_cfg: Mapping[str, Any]) -> Preprocess:
    """timm's ``pretrained_cfg`` (``config.json`` of a timm Hub folder): mean, std, input_size
    ``[C, H, W]``, crop_pct, interpolation."""
    _, h, w = pretrained_cfg.get("input_size", (3, 224, 224))
    mean, std = pretrained_cfg.get("mean", IMAGENET_MEAN), pretrained_cfg.get("std", IMAGENET_STD)
    crop = 1.0 if pretrained_cfg.get("crop_mode", "center") != "center" else pretrained_cfg.get("crop_pct", 0.875)
    return Preprocess(mean, std, h if h == w else (h, w), crop, pretrained_cfg.get("interpolation") or "bilinear")


def _hw(size) -> Tuple[Optional[int], Optional[int], Optional[int]]:
    """``(height, width, shortest_edge)`` of a Hugging Face ``size`` / ``crop_size`` value."""
    if size is None:
        return None, None, None
    if isinstance(size, (int, float)):
        return int(size), int(size), None
    return size.get("height"), size.get("width"), size.get("shortest_edge")


def from_hf_processor(processor: Mapping[str, Any]) -> Preprocess:
    """A Hugging Face ``preprocessor_config.json`` (image processors): image_mean/std, size,
    crop_size, crop_pct, resample. A fixed ``size`` (height, width) is read as a centre crop of 1."""
    mean = processor.get("image_mean", IMAGENET_MEAN) if processor.get("do_normalize", True) else (0.0,) * 3
    std = processor.get("image_std", IMAGENET_STD) if processor.get("do_normalize", True) else (1.0,) * 3
    h, w, short = _hw(processor.get("size"))
    crops = processor.get("do_center_crop", processor.get("crop_size") is not None)
    ch, cw, _ = _hw(processor.get("crop_size")) if crops else (None, None, None)
    if ch and cw:
        base = short or min(h or ch, w or cw)
        size, crop = (ch if ch == cw else (ch, cw)), min(1.0, min(ch, cw) / base)
    elif short:
        size, crop = short, float(processor.get("crop_pct") or 1.0)
    else:
        size, crop = ((h or 224) if h == w or w is None else (h, w)), 1.0
    return Preprocess(mean, std, size, crop, HF_RESAMPLE.get(processor.get("resample", 2), "bilinear"))


def load_image(path, p: Preprocess) -> np.ndarray:
    """uint8 ``(H, W, C)``: decoded, shorter side resized to ``input_size / crop_fraction`` with
    ``p.interpolation``, centre ``input_size`` crop (with crop fraction 1 and bilinear, exactly
    what ``tljax.data.image_folder`` does for training). Errors name the file and what was expected."""
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file {path!r} not found")
    th, tw = p.size_hw
    resample = getattr(Image, p.interpolation.upper())
    try:
        with Image.open(path) as image:
            image = image.convert("L" if p.channels == 1 else "RGB")
            w, h = image.size
            if th == tw:
                target = round(th / p.crop_fraction)
                s = target / min(w, h)
                nw, nh = max(target, round(w * s)), max(target, round(h * s))
            else:
                nw, nh = round(tw / p.crop_fraction), round(th / p.crop_fraction)
            image = image.resize((nw, nh), resample, reducing_gap=3.0)
            left, top = (nw - tw) // 2, (nh - th) // 2
            array = np.asarray(image.crop((left, top, left + tw, top + th)), np.uint8)
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError) as err:
        raise ValueError(f"{path}: cannot read it as an image ({type(err).__name__}: {err}); expected an image "
                         f"file PIL decodes ({', '.join(IMAGE_EXTENSIONS)})") from err
    return array[..., None] if p.channels == 1 else array


def is_image_paths(inputs) -> bool:
    """A path, or a list of paths (``os.PathLike``, or strings ending in an image extension)."""
    items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    return bool(items) and all(isinstance(x, os.PathLike) or (isinstance(x, str) and x.lower().endswith(
        IMAGE_EXTENSIONS)) for x in items)


def prepare_images(inputs, p: Preprocess) -> np.ndarray:
    """float32 ``(n, H, W, C)`` in [0, 1] from image files or arrays: uint8 pixels are divided by
    255, floats are taken as already in [0, 1]; arrays must already have ``p``'s size (files are
    resized). Anything else fails naming the shape and dtype expected."""
    h, w = p.size_hw
    expected = f"images of shape (n, {h}, {w}, {p.channels}) as uint8 or float in [0, 1], or image file paths"
    if is_image_paths(inputs):
        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        return np.stack([load_image(x, p) for x in items]).astype(np.float32) / 255.0
    try:
        x = np.asarray(inputs)
    except (ValueError, TypeError) as err:
        raise ValueError(f"predict expected {expected}; got {type(inputs).__name__} ({err})") from None
    if x.ndim == 3 and p.channels == 1 and x.shape[1:] == (h, w):
        x = x[..., None]  # (n, H, W) grayscale
    elif x.ndim == 3 and x.shape == (h, w, p.channels):
        x = x[None]  # one image
    if x.dtype.kind not in "uf" or (x.dtype.kind == "u" and x.dtype != np.uint8):
        raise ValueError(f"predict expected {expected}; got dtype {x.dtype} (shape {x.shape})")
    if x.ndim != 4 or x.shape[1:] != (h, w, p.channels):
        raise ValueError(f"predict expected {expected}; got shape {x.shape} ({x.dtype})")
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def describe(p: Preprocess) -> str:
    return f"mean {p.mean}, std {p.std} ({p.channel_order}), input size {p.input_size}"


def mismatches(expected: Preprocess, normalize_setting: str, image_size, what: str) -> List[str]:
    """Where training with ``config.augment.normalize=normalize_setting`` on ``image_size`` images
    contradicts the ``expected`` preprocessing of the weights ``what``; one message per field."""
    out = []
    kind = normalize_kind(expected)
    if kind != normalize_setting:
        can = f"config.augment.normalize={kind!r}" if kind else "no config.augment.normalize value (none, " \
                                                                "imagenet, caffe_bgr) computes it"
        given = describe(from_normalize(normalize_setting, expected.channels)).rsplit(", input size", 1)[0]
        out.append(f"{what} expects inputs normalised with {describe(expected).rsplit(', input size', 1)[0]}, but "
                   f"config.augment.normalize={normalize_setting!r} gives {given}; {can}")
    size = tuple(image_size) if isinstance(image_size, Sequence) else (int(image_size),) * 2
    if size != expected.size_hw:
        out.append(f"{what} expects {expected.size_hw[0]}×{expected.size_hw[1]} inputs, but training images are "
                   f"{size[0]}×{size[1]} (config.data.image_size, or the arrays given)")
    return out


_WARNED: set = set()


def warn_once(message: str) -> None:
    """A ``PreprocessMismatch`` warning, at most once per process for each message."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, PreprocessMismatch, stacklevel=3)
