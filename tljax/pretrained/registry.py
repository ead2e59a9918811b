"""Named pretrained weights: where each file lives, its checksum, its format and its arch.

Checksums: torchvision names every file ``<name>-<first 8+ hex digits of its sha256>.pth``
(``torch.hub`` verifies that prefix), so those entries carry the published prefix and the
loader checks that the file's sha256 starts with it. Keras publishes the md5 of its VGG16 file
(``file_hash`` in ``keras/applications/vgg16.py``). Every entry carries a checksum: timm's Hub
files are not listed because their hashes could not be confirmed offline; load them from a
local ``model.safetensors`` (``load(path, arch=..., source='timm')``) or ``register`` them
with their sha256.

A cache name (``filename``, else the URL's basename) must be a plain file name: no path
separator, no drive, not ``..`` and not starting with ``.`` (hidden names are where partial
downloads live). Anything else could write outside ``$TLJAX_CACHE`` and is refused when the
``Weights`` is made.
"""

from __future__ import annotations

import dataclasses
import posixpath
from pathlib import PurePosixPath, PureWindowsPath
from typing import Dict, Optional

TORCHVISION_NORM = "RGB in [0, 1], then normalise with mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)"


@dataclasses.dataclass(frozen=True)
class Weights:
    url: str
    arch: str
    format: str  # 'torchvision' | 'timm' | 'hf' | 'keras_h5' | 'tljax'
    sha256: Optional[str] = None  # full hex digest, or the published prefix of it
    md5: Optional[str] = None
    filename: Optional[str] = None  # name in the cache; default: the URL's basename
    preprocessing: str = ""

    def __post_init__(self):
        check_cache_name(self.cache_name, self.url)

    @property
    def cache_name(self) -> str:
        return self.filename or posixpath.basename(self.url)


def check_cache_name(name: str, url: str) -> str:
    """``name`` if it is a plain file name that stays inside the cache folder; ``ValueError`` otherwise."""
    if not name:
        raise ValueError(f"weights at {url}: the URL ends without a file name; pass filename=<a plain file "
                         f"name> to name the file in the cache")
    plain = PurePosixPath(name).name == name == PureWindowsPath(name).name and "\0" not in name
    if not plain or name.startswith("."):
        raise ValueError(f"weights at {url}: cache file name {name!r} could resolve outside the cache folder "
                         f"($TLJAX_CACHE); filename= must be a plain file name (no '/', '\\', drive or '..', "
                         f"not starting with '.')")
    return name


_TV = "https://download.pytorch.org/models/"
REGISTRY: Dict[str, Weights] = {
    "resnet18.tv_in1k": Weights(_TV + "resnet18-f37072fd.pth", "resnet18", "torchvision", "f37072fd",
                                preprocessing=TORCHVISION_NORM),
    "resnet34.tv_in1k": Weights(_TV + "resnet34-b627a593.pth", "resnet34", "torchvision", "b627a593",
                                preprocessing=TORCHVISION_NORM),
    "resnet50.tv_in1k": Weights(_TV + "resnet50-0676ba61.pth", "resnet50", "torchvision", "0676ba61",
                                preprocessing=TORCHVISION_NORM),
    "resnet50.tv2_in1k": Weights(_TV + "resnet50-11ad3fa6.pth", "resnet50", "torchvision", "11ad3fa6",
                                 preprocessing=TORCHVISION_NORM + " (resize 232, crop 224)"),
    "resnet101.tv_in1k": Weights(_TV + "resnet101-63fe2227.pth", "resnet101", "torchvision", "63fe2227",
                                 preprocessing=TORCHVISION_NORM),
    "resnet152.tv_in1k": Weights(_TV + "resnet152-394f9c45.pth", "resnet152", "torchvision", "394f9c45",
                                 preprocessing=TORCHVISION_NORM),
    "vgg16.tv_in1k": Weights(_TV + "vgg16-397923af.pth", "vgg16", "torchvision", "397923af",
                             preprocessing=TORCHVISION_NORM),
    "vgg16_bn.tv_in1k": Weights(_TV + "vgg16_bn-6c64b313.pth", "vgg16_bn", "torchvision", "6c64b313",
                                preprocessing=TORCHVISION_NORM),
    "vit_b16.tv_in1k": Weights(_TV + "vit_b_16-c867db91.pth", "vit_b16", "torchvision", "c867db91",
                               preprocessing=TORCHVISION_NORM + " (bilinear resize 256, crop 224)"),
    "vgg16.keras_in1k": Weights(
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
        "vgg16_weights_tf_dim_ordering_tf_kernels.h5", "vgg16", "keras_h5",
        md5="64373286793e3c8b2b4e3219cbf3544b",
        preprocessing="BGR in [0, 255], minus the ImageNet mean (103.939, 116.779, 123.68); no scaling"),
}


def register(name: str, weights: Weights) -> Weights:
    """Adds (or replaces) a named entry, e.g. for weights on a lab server."""
    REGISTRY[name] = weights
    return weights
