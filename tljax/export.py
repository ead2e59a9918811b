"""A fine-tuned model that predicts, evaluates and saves itself: ``Finetuned``, ``load_finetuned``.

``predict`` applies what training applied, so a user never re-creates it by hand: image files
are decoded, resized and centre-cropped by the model's ``Preprocess``, pixels scaled to [0, 1]
and normalised inside the compiled function; texts go through the saved tokenizer, cut to
``max_len`` tokens. ``save(dir)`` writes a folder (``tljax.pretrained.tljax_format``) that
``load_finetuned`` and ``tljax.pretrained.load`` read back, plus ``inference.stablehlo``: the
same probability function with the weights inside, serialised by ``jax.export`` with a symbolic
batch dimension and lowered for CPU and CUDA GPUs, which runs without tljax::

    exported = jax.export.deserialize(open("model/inference.stablehlo", "rb").read())
    probabilities = exported.call(images)  # float32 (n, H, W, C) in [0, 1], already resized

Text models export ``(input_ids, attention_mask, token_type_ids)``, int32 ``(n, max_len)``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tljax import models
from tljax.data import text as T
from tljax.data.preprocess import Preprocess, normalize, prepare_images
from tljax.metrics import classification_metrics
from tljax.pretrained import read_variables, tljax_format

STABLEHLO = "inference.stablehlo"
PLATFORMS = ("cpu", "cuda")  # lowered for both whatever the machine (jax.export cross-lowers); TPU: ("tpu",)
SUMMARY = "summary.json"


def logits_fn(model, preprocess: Optional[Preprocess]):
    """``fn(variables, *inputs) -> float32 logits``: ``(images,)`` in [0, 1] normalised by
    ``preprocess``, or ``(input_ids, attention_mask, token_type_ids)`` when it is None."""

    def fn(variables, *inputs):
        if preprocess is not None:
            out = model.apply(variables, normalize(inputs[0], preprocess), train=False)
        else:
            ids, mask, types = inputs
            out = model.apply(variables, ids, train=False, attention_mask=mask, token_type_ids=types)
        return (out["logits"] if isinstance(out, dict) else out).astype(jnp.float32)

    return fn


def probabilities_fn(model, preprocess: Optional[Preprocess]):
    logits = logits_fn(model, preprocess)
    return lambda variables, *inputs: jax.nn.softmax(logits(variables, *inputs), axis=-1)


@dataclasses.dataclass
class Finetuned:
    """A trained classifier with its preprocessing: ``predict``, ``evaluate``, ``save``.

    Image models carry ``preprocess``; text models ``tokenizer`` (a ``tokenizers.Tokenizer``) and
    ``max_len``. ``variables`` are host arrays with any LoRA adapters already folded in.
    """

    arch: str
    model_kwargs: Dict[str, Any]  # models.create kwargs (JSON-able)
    label_names: List[str]
    variables: Dict[str, Any]
    preprocess: Optional[Preprocess] = None
    max_len: int = 0
    tokenizer: Any = None
    summary: Dict[str, Any] = dataclasses.field(default_factory=dict)
    batch_size: int = 256  # examples per compiled call of predict

    def __post_init__(self):
        if (self.preprocess is None) == (self.tokenizer is None):
            raise ValueError("Finetuned needs a preprocess (image model) or a tokenizer (text model), not both")

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @functools.cached_property
    def model(self):
        return models.create(self.arch, self.num_classes, **self.model_kwargs)

    @functools.cached_property
    def _compiled(self):
        return {"probabilities": jax.jit(probabilities_fn(self.model, self.preprocess)),
                "logits": jax.jit(logits_fn(self.model, self.preprocess))}

    def inputs(self, inputs) -> tuple:
        """The arrays the compiled function takes: images ``(n, H, W, C)`` float32 in [0, 1], or
        token ids, mask and types, int32 ``(n, max_len)``."""
        if self.preprocess is not None:
            return (prepare_images(inputs, self.preprocess),)
        return self._tokens(inputs)

    def _tokens(self, inputs) -> tuple:
        expected = (f"texts (a str or a list of str) or token ids {{'input_ids': int (n, <= {self.max_len}), "
                    f"'attention_mask', 'token_type_ids'}}")
        if isinstance(inputs, str):
            inputs = [inputs]
        if isinstance(inputs, Mapping):
            if "input_ids" not in inputs:
                raise ValueError(f"predict expected {expected}; got a dict with keys {sorted(inputs)}")
            ids = np.asarray(inputs["input_ids"])
            if ids.ndim != 2 or ids.dtype.kind not in "iu" or ids.shape[1] > self.max_len:
                raise ValueError(f"predict expected {expected}; got input_ids of shape {ids.shape} ({ids.dtype})")
            arrays = [ids, np.asarray(inputs.get("attention_mask", np.ones_like(ids))),
                      np.asarray(inputs.get("token_type_ids", np.zeros_like(ids)))]
            pad = ((0, 0), (0, self.max_len - ids.shape[1]))
            return tuple(np.pad(a.astype(np.int32), pad) for a in arrays)
        if not isinstance(inputs, Sequence) or not inputs or not all(isinstance(t, str) for t in inputs):
            raise ValueError(f"predict expected {expected}; got {type(inputs).__name__}"
                             + (f" of {type(inputs[0]).__name__}" if isinstance(inputs, Sequence) and inputs else ""))
        tokens = T.tokenize(self.tokenizer, list(inputs), self.max_len)
        return tuple(tokens[k] for k in T.TEXT_KEYS)

    def _run(self, name: str, inputs) -> np.ndarray:
        arrays = self.inputs(inputs)
        n = len(arrays[0])
        chunk = min(self.batch_size, 1 << max(n - 1, 0).bit_length())  # few shapes, few compilations
        out = []
        for start in range(0, n, chunk):
            part = [a[start:start + chunk] for a in arrays]
            padded = [np.concatenate([p, np.repeat(p[-1:], chunk - len(p), 0)]) for p in part]
            out.append(np.asarray(self._compiled[name](self.variables, *padded))[:len(part[0])])
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)

    def predict(self, inputs) -> np.ndarray:
        """Class probabilities, float32 ``(n, num_classes)``, with the training preprocessing."""
        return self._run("probabilities", inputs)

    def logits(self, inputs) -> np.ndarray:
        return self._run("logits", inputs)

    def evaluate(self, inputs, labels) -> Dict[str, Any]:
        """Accuracy, macro precision/recall/F1 and confusion (``tljax.metrics``); ``labels`` are
        class ids or label names."""
        labels = list(np.asarray(labels).tolist())
        index = {name: i for i, name in enumerate(self.label_names)}
        if labels and isinstance(labels[0], str):
            unknown = sorted(set(labels) - set(index))
            if unknown:
                raise ValueError(f"labels {unknown[:5]} are not among the model's {self.label_names}")
            labels = [index[x] for x in labels]
        ids = np.asarray(labels, np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_classes):
            raise ValueError(f"label ids must be in [0, {self.num_classes}); got {ids.min()}…{ids.max()}")
        predictions = self.predict(inputs).argmax(-1)
        if len(predictions) != len(ids):
            raise ValueError(f"{len(predictions)} inputs but {len(ids)} labels")
        return classification_metrics(ids, predictions, self.num_classes)

    def input_specs(self, batch) -> List[jax.ShapeDtypeStruct]:
        if self.preprocess is not None:
            h, w = self.preprocess.size_hw
            return [jax.ShapeDtypeStruct((batch, h, w, self.preprocess.channels), jnp.float32)]
        return [jax.ShapeDtypeStruct((batch, self.max_len), jnp.int32)] * 3

    def export(self, platforms: Sequence[str] = PLATFORMS) -> bytes:
        """The probability function with the weights inside, serialised StableHLO (``jax.export``),
        batch dimension symbolic, lowered for each of ``platforms`` (one file runs on any of them)."""
        variables = jax.tree.map(jnp.asarray, self.variables)
        fn = probabilities_fn(self.model, self.preprocess)
        batch = jax.export.symbolic_shape("batch")[0]
        exported = jax.export.export(jax.jit(lambda *x: fn(variables, *x)), platforms=platforms)(
            *self.input_specs(batch))
        return bytes(exported.serialize())

    def save(self, path, platforms: Sequence[str] = PLATFORMS) -> Path:
        """Writes the export folder (see the module docstring) and returns its path."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} exists and is not a folder; save writes a folder")
        names = ["images"] if self.preprocess is not None else list(T.TEXT_KEYS)
        inference = {"file": STABLEHLO, "inputs": [{"name": n, "shape": ["batch", *s.shape[1:]], "dtype": str(s.dtype)}
                                                   for n, s in zip(names, self.input_specs(1))],
                     "output": f"probabilities, float32 (batch, {self.num_classes})", "platforms": list(platforms),
                     "images": "float32 in [0, 1], resized and cropped as preprocess says" if names == ["images"]
                     else None}
        tljax_format.write(path, self.variables, self.arch, self.model_kwargs, self.num_classes, self.label_names,
                           self.preprocess, {"max_len": self.max_len} if self.tokenizer is not None else None,
                           inference=inference)
        if self.tokenizer is not None:
            self.tokenizer.save(str(path / tljax_format.TOKENIZER))
        (path / SUMMARY).write_text(json.dumps(self.summary, indent=1, default=repr), encoding="utf-8")
        (path / STABLEHLO).write_bytes(self.export(platforms))
        return path


def load_finetuned(path) -> Finetuned:
    """The ``Finetuned`` that ``save`` wrote to ``path`` (predictions equal the saved model's)."""
    config = tljax_format.read_config(path)
    variables, arch, kwargs = read_variables(path, progress=False)
    text = config["text"]
    tokenizer = None
    if text:
        tokenizer = T.load_tokenizer(os.path.join(path, tljax_format.TOKENIZER), int(text["max_len"]))
    summary_file = Path(path) / SUMMARY
    summary = json.loads(summary_file.read_text(encoding="utf-8")) if summary_file.is_file() else {}
    return Finetuned(arch, dict(kwargs), list(config["label_names"]), jax.device_get(variables),
                     tljax_format.preprocess_of(config), int(text["max_len"]) if text else 0, tokenizer, summary)
