"""Named pretrained weights: where each file lives, its checksum, its format and its arch.

Checksums: torchvision names every file ``<name>-<first 8+ hex digits of its sha256>.pth``
(``torch.hub`` verifies that prefix), so those entries carry the published prefix and the
loader checks that the file's sha256 starts with it. Keras publishes the md5 of its VGG16 file
(``file_hash`` in ``keras/applications/vgg16.py``). Every entry carries a checksum: timm's Hub
files are not listed because their hashes could not be confirmed offline; load them from a
local ``model.safetensors`` (``load(path, arch=..., source='timm')``) or ``register`` them
with their sha256.

Each entry also carries its ``Preprocess`` (``tljax.data.preprocess``): the resize, crop and
normalisation its weights were trained with, taken from timm's ``pretrained_cfg`` for the same
files (torchvision v1 weights: resize 256, centre crop 224 = 0.875, bilinear, ImageNet mean and
std; ``resnet50.tv2_in1k``: resize 232, crop 224, timm's ``test_crop_pct`` 0.965) and from
Keras' ``preprocess_input`` (caffe: BGR in [0, 255] minus the mean; ``load_img`` resizes with
nearest-neighbour and does not crop).

A cache name (``filename``, else the URL's basename) must be a plain file name: no path
separator, no drive, not ``..`` and not starting with ``.`` (hidden names are where partial
downloads live). Anything else could write outside ``$TLJAX_CACHE`` and is refused when the
``Weights`` is made.

Hub entries (``HUB_REGISTRY``, ``HubWeights``) name a Hugging Face Hub repository and revision
instead of a URL; ``tljax.pretrained.hub`` fetches them through ``huggingface_hub`` and reads arch,
sizes and preprocessing from the snapshot's ``config.json`` / ``preprocessor_config.json``. A commit
sha fixes the files (huggingface_hub checks each file's size, not its hash). The shas could not be
read off the Hub here (no network); each was taken from public source pinning the same repository,
and no source found disagreed: ``facebook/dinov2-small`` (mteb,
``docs/overview/available_models/image.md``), ``openai/clip-vit-base-patch16`` (mteb,
``mteb/models/clip_models.py``), ``google/siglip-base-patch16-224`` (mteb,
``mteb/models/siglip_models.py``), each also pinned so by other projects; ``FacebookAI/roberta-base``,
``FacebookAI/xlm-roberta-base``, ``distilbert/distilbert-base-uncased``,
``timm/vit_base_patch16_224.augreg2_in21k_ft_in1k`` and ``timm/resnet50.a1_in1k`` from several
projects' pins each; ``timm/convnext_tiny.fb_in22k_ft_in1k`` from one project only. No sha was
found for ``timm/convnext_tiny.fb_in22k`` and ``timm/efficientnet_b0.ra_in1k``: they follow
``main`` (not reproducible; pin a sha once confirmed).
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Dict, Optional, Union

from tljax.data.preprocess import Preprocess, from_normalize

TORCHVISION_NORM = "RGB in [0, 1], then normalise with mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)"


@dataclasses.dataclass(frozen=True)
class Weights:
    url: str
    arch: str
    format: str  # 'torchvision' | 'timm' | 'hf' | 'keras_h5' | 'tljax'
    sha256: Optional[str] = None  # full hex digest, or the published prefix of it
    md5: Optional[str] = None
    filename: Optional[str] = None  # name in the cache; default: the URL's basename
    preprocessing: str = ""  # in words
    preprocess: Optional[Preprocess] = None  # what Finetuned.predict applies; None: unknown

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
TV1 = Preprocess()  # ImageNet mean/std, 224, crop 0.875, bilinear
TV2 = Preprocess(crop_fraction=0.965)
KERAS_CAFFE = dataclasses.replace(from_normalize("caffe_bgr"), interpolation="nearest")
REGISTRY: Dict[str, Weights] = {
    "resnet18.tv_in1k": Weights(_TV + "resnet18-f37072fd.pth", "resnet18", "torchvision", "f37072fd",
                                preprocess=TV1, preprocessing=TORCHVISION_NORM),
    "resnet34.tv_in1k": Weights(_TV + "resnet34-b627a593.pth", "resnet34", "torchvision", "b627a593",
                                preprocess=TV1, preprocessing=TORCHVISION_NORM),
    "resnet50.tv_in1k": Weights(_TV + "resnet50-0676ba61.pth", "resnet50", "torchvision", "0676ba61",
                                preprocess=TV1, preprocessing=TORCHVISION_NORM),
    "resnet50.tv2_in1k": Weights(_TV + "resnet50-11ad3fa6.pth", "resnet50", "torchvision", "11ad3fa6",
                                 preprocess=TV2, preprocessing=TORCHVISION_NORM + " (resize 232, crop 224)"),
    "resnet101.tv_in1k": Weights(_TV + "resnet101-63fe2227.pth", "resnet101", "torchvision", "63fe2227",
                                 preprocess=TV1, preprocessing=TORCHVISION_NORM),
    "resnet152.tv_in1k": Weights(_TV + "resnet152-394f9c45.pth", "resnet152", "torchvision", "394f9c45",
                                 preprocess=TV1, preprocessing=TORCHVISION_NORM),
    "vgg16.tv_in1k": Weights(_TV + "vgg16-397923af.pth", "vgg16", "torchvision", "397923af",
                             preprocess=TV1, preprocessing=TORCHVISION_NORM),
    "vgg16_bn.tv_in1k": Weights(_TV + "vgg16_bn-6c64b313.pth", "vgg16_bn", "torchvision", "6c64b313",
                                preprocess=TV1, preprocessing=TORCHVISION_NORM),
    "vit_b16.tv_in1k": Weights(_TV + "vit_b_16-c867db91.pth", "vit_b16", "torchvision", "c867db91",
                               preprocess=TV1, preprocessing=TORCHVISION_NORM + " (bilinear resize 256, crop 224)"),
    "vgg16.keras_in1k": Weights(
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
        "vgg16_weights_tf_dim_ordering_tf_kernels.h5", "vgg16", "keras_h5",
        md5="64373286793e3c8b2b4e3219cbf3544b",
        preprocess=KERAS_CAFFE,
        preprocessing="BGR in [0, 255], minus the ImageNet mean (103.939, 116.779, 123.68); no scaling"),
}


HUB_REPO_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")  # [org/]name, as the Hub spells it


@dataclasses.dataclass(frozen=True)
class HubWeights:
    """A Hugging Face Hub repository at a revision (a commit sha pins it; a branch follows it)."""

    repo: str  # e.g. 'facebook/dinov2-small', 'timm/resnet50.a1_in1k'
    revision: str = "main"

    def __post_init__(self):
        if not HUB_REPO_ID.fullmatch(self.repo) or not self.revision:
            raise ValueError(f"HubWeights({self.repo!r}, {self.revision!r}): repo must be '<org>/<name>' as on the "
                             f"Hub and revision a branch, tag or commit sha")


HUB_REGISTRY: Dict[str, HubWeights] = {
    "dinov2_small.hf": HubWeights("facebook/dinov2-small", "ed25f3a31f01632728cabb09d1542f84ab7b0056"),
    "clip_vit_b16.hf": HubWeights("openai/clip-vit-base-patch16", "57c216476eefef5ab752ec549e440a49ae4ae5f3"),
    "siglip_base.hf": HubWeights("google/siglip-base-patch16-224", "7fd15f0689c79d79e38b1c2e2e2370a7bf2761ed"),
    "roberta_base.hf": HubWeights("FacebookAI/roberta-base", "e2da8e2f811d1448a5b465c236feacd80ffbac7b"),
    "xlm_roberta_base.hf": HubWeights("FacebookAI/xlm-roberta-base", "e73636d4f797dec63c3081bb6ed5c7b0bb3f2089"),
    "distilbert_base.hf": HubWeights("distilbert/distilbert-base-uncased",
                                     "12040accade4e8a0f71eabdb258fecc2e7e948be"),
    "vit_b16.timm_augreg2_in1k": HubWeights("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
                                            "063c6c38a5d8510b2e57df480445e94b231dad2c"),
    "resnet50.timm_a1_in1k": HubWeights("timm/resnet50.a1_in1k", "767268603ca0cb0bfe326fa87277f19c419566ef"),
    "convnext_tiny.timm_in22k_ft_in1k": HubWeights("timm/convnext_tiny.fb_in22k_ft_in1k",
                                                   "bc48a87f119bae1b06418f5340bfa97ef75d4609"),
    "convnext_tiny.timm_in22k": HubWeights("timm/convnext_tiny.fb_in22k", "main"),  # sha unconfirmed
    "efficientnet_b0.timm": HubWeights("timm/efficientnet_b0.ra_in1k", "main"),  # sha unconfirmed
}


def register(name: str, weights: Union[Weights, HubWeights]) -> Union[Weights, HubWeights]:
    """Adds (or replaces) a named entry: ``Weights`` at a URL (e.g. a lab server) or ``HubWeights``."""
    table, other = (HUB_REGISTRY, REGISTRY) if isinstance(weights, HubWeights) else (REGISTRY, HUB_REGISTRY)
    other.pop(name, None)
    table[name] = weights
    return weights
