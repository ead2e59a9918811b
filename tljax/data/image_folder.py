"""A folder with one subfolder per class, decoded and resized with PIL on the host.

Preparation decodes every file once (at reduced JPEG resolution, so it is quick): an
unreadable or truncated image is skipped, counted and named once in the log; an empty class
folder, a missing folder, or an eval class unknown to training fails before training starts.
Reading an example decodes it, converts grayscale/RGBA/palette/GIF to RGB, resizes the
shorter side to ``image_size`` and crops the centre square; augmentation happens on device.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

log = logging.getLogger(__name__)
EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def class_files(folder: str, class_names: Optional[Sequence[str]] = None) -> Tuple[List[str], List[int], Tuple[str, ...]]:
    """``(paths, labels, class_names)``; classes are the sorted subfolders unless given."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder {folder!r} not found (expected one subfolder per class)")
    found = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if not found:
        raise ValueError(f"image folder {folder!r} has no class subfolders")
    names = tuple(class_names) if class_names else tuple(found)
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise ValueError(f"{folder}: class folders {unknown} are not among the training classes {list(names)}")
    paths, labels = [], []
    for label, name in enumerate(names):
        sub = os.path.join(folder, name)
        files = sorted(f for f in os.listdir(sub) if f.lower().endswith(EXTENSIONS)) if os.path.isdir(sub) else []
        if not files and name in found:
            raise ValueError(f"class folder {sub!r} holds no images (extensions {EXTENSIONS})")
        paths += [os.path.join(sub, f) for f in files]
        labels += [label] * len(files)
    return paths, labels, names


def decode(path: str, image_size: int, draft: bool = False) -> np.ndarray:
    """RGB uint8 ``(image_size, image_size, 3)``: shorter side resized to ``image_size``, centre crop."""
    with Image.open(path) as image:
        if draft:
            image.draft("RGB", (image_size, image_size))  # JPEG: decode at a reduced scale
        image = image.convert("RGB")
        w, h = image.size
        s = image_size / min(w, h)
        nw, nh = max(image_size, round(w * s)), max(image_size, round(h * s))
        image = image.resize((nw, nh), Image.BILINEAR, reducing_gap=3.0)
        left, top = (nw - image_size) // 2, (nh - image_size) // 2
        return np.asarray(image.crop((left, top, left + image_size, top + image_size)), np.uint8)


def readable(paths: Sequence[str], desc: str) -> Tuple[List[int], List[str]]:
    """Indices of the files PIL decodes fully, and the paths of those it cannot."""
    keep, bad = [], []
    for i, path in enumerate(tqdm(paths, desc=desc, leave=False)):
        try:
            decode(path, 16, draft=True)
            keep.append(i)
        except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for unknown/truncated/corrupt data
            bad.append(path)
            log.warning("skipping unreadable image %s (%s)", path, e)
    return keep, bad


class ImageFolder:
    """Random-access examples ``{'image': uint8 HWC, 'label': int32}`` for the grain pipeline."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int], image_size: int):
        self.paths, self.labels, self.image_size = list(paths), np.asarray(labels, np.int32), image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Dict[str, np.ndarray]:
        return {"image": decode(self.paths[i], self.image_size), "label": self.labels[i]}


def load(folder: str, image_size: int, class_names: Optional[Sequence[str]] = None) -> Tuple[ImageFolder, Dict]:
    """The readable images of ``folder`` and ``{'label_names', 'skipped', 'skipped_paths'}``."""
    paths, labels, names = class_files(folder, class_names)
    keep, bad = readable(paths, desc=f"scan {os.path.basename(os.path.normpath(folder))}")
    if not keep:
        raise ValueError(f"no readable images in {folder!r}")
    source = ImageFolder([paths[i] for i in keep], [labels[i] for i in keep], image_size)
    return source, {"label_names": list(names), "skipped": len(bad), "skipped_paths": bad}
