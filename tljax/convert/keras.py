"""Keras ``.h5`` weights (Keras 2 / legacy layout and Keras 3 ``.weights.h5``) → tljax paths, via h5py.

Keras kernels are already HWIO / (in, out) and its VGG16 flattens NHWC like tljax, so the
table only renames layers: ``block3_conv2`` → ``conv3_2``, ``fc1``/``fc2`` → ``fc6``/``fc7``,
``predictions`` → ``head``.
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Tuple

import numpy as np

# Keras layer name -> tljax module path.
VGG16 = [
    (r"block(\d)_conv(\d)", r"backbone/conv\1_\2"),
    (r"fc1", "backbone/fc6"),
    (r"fc2", "backbone/fc7"),
    (r"predictions", "head"),
]
# Variable order Keras saves for each layer type, by number of variables.
LEAVES = {1: ("params/{}/kernel",), 2: ("params/{}/kernel", "params/{}/bias"),
          4: ("params/{}/scale", "params/{}/bias", "batch_stats/{}/mean", "batch_stats/{}/var")}


def _text(x) -> str:
    return x.decode("utf8") if isinstance(x, bytes) else str(x)


def read_layers(path) -> Dict[str, List[np.ndarray]]:
    """``{layer name: [arrays in Keras order]}`` from either h5 layout (empty layers left out).

    A missing file raises ``FileNotFoundError``; one h5py cannot read raises a ``ValueError`` naming it.
    """
    import h5py

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such Keras .h5 weights file")
    try:
        return _read_layers(h5py.File(path, "r"), path)
    except (OSError, KeyError, RuntimeError) as err:  # h5py's errors for a truncated or corrupt file
        reason = " ".join(str(err).split())
        raise ValueError(f"{path}: cannot read it as Keras weights in HDF5 (.h5); the file is truncated or "
                         f"corrupt, or not HDF5: download or save it again ({type(err).__name__}: {reason})") from err


def _read_layers(f, path) -> Dict[str, List[np.ndarray]]:
    layers = {}
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" in root.attrs:  # Keras 2 / legacy h5: weight_names list per layer group
            for name in map(_text, root.attrs["layer_names"]):
                names = [_text(n) for n in root[name].attrs.get("weight_names", [])]
                if names:
                    layers[name] = [np.asarray(root[name][n]) for n in names]
        elif "layers" in f:  # Keras 3 .weights.h5: layers/<object>/vars/<i>, the layer name in an attribute
            for group in f["layers"].values():
                if "vars" in group and len(group["vars"]):
                    name = _text(group["vars"].attrs.get("name", group.name.split("/")[-1]))
                    layers[name] = [np.asarray(group["vars"][str(i)]) for i in range(len(group["vars"]))]
        else:
            raise ValueError(f"{path}: not a Keras weights file (no 'layer_names' attribute or 'layers' group)")
    return layers


def convert_layers(layers: Dict[str, List[np.ndarray]], table=VGG16) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Flat tljax dict and provenance (``path → 'layer/index'``); unknown layers keep their name."""
    flat, sources = {}, {}
    for name, arrays in layers.items():
        target = next((re.sub(p, t, name) for p, t in table if re.fullmatch(p, name)), f"backbone/{name}")
        leaves = LEAVES.get(len(arrays), tuple(f"params/{{}}/{i}" for i in range(len(arrays))))
        for i, (leaf, arr) in enumerate(zip(leaves, arrays)):
            flat[leaf.format(target)] = arr.astype(np.float32)
            sources[leaf.format(target)] = f"{name}[{i}]"
    return flat, sources
