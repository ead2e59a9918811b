"""Any TFDS catalog dataset through ``tfds.data_source``: random access, no TensorFlow needed.

The dataset must already be prepared in ``data_dir`` (array_record format), or be mocked
with ``tfds.testing.mock_data`` in tests.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np


class TfdsSource:
    """Examples ``{'image': …, 'label': int32}`` of one TFDS split."""

    def __init__(self, source, image_key: str, label_key: str):
        self.source, self.image_key, self.label_key = source, image_key, label_key

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> Dict[str, np.ndarray]:
        ex = self.source[int(i)]
        return {"image": np.asarray(ex[self.image_key]), "label": np.int32(ex[self.label_key])}


def load(name: str, split: str, data_dir=None, image_key: str = "image", label_key: str = "label",
         download: bool = False) -> Tuple[TfdsSource, Dict]:
    """One split of ``name`` and ``{'label_names'}`` from the dataset's features."""
    import tensorflow_datasets as tfds  # noqa: PLC0415 (heavy import, only for tfds sources)

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=download)
    except Exception as e:  # tfds raises several types for "not prepared"
        raise FileNotFoundError(
            f"TFDS dataset {name!r} split {split!r} is not available in data_dir={data_dir!r} ({e}). Prepare it "
            f"first (e.g. `tfds build {name} --file_format=array_record`) or point data.data_dir at it.") from e
    features = source.dataset_info.features
    for key in (image_key, label_key):
        if key not in features:
            raise KeyError(f"TFDS dataset {name!r} has no feature {key!r}; features: {list(features.keys())}")
    names = list(getattr(features[label_key], "names", []) or [])
    return TfdsSource(source, image_key, label_key), {"label_names": names, "num_classes": len(names)}
